# bulkwatch on ECS Fargate: the worker's roles, its two DynamoDB tables, its
# log group, the task definition and the service.
#
# Two files outside this directory are the single source of truth, so the
# JSON a reader audits is the JSON that is deployed:
#   ../iam/worker-policy.json     the actions, statement by statement (the
#                                 resources are filled in here)
#   ../ecs/task-definition.json   the task definition (its ${...} fields are
#                                 filled in here)
# tests/deploy.rs checks both against the code.

provider "aws" {
  default_tags {
    tags = var.tags
  }
}

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  lease_table = coalesce(var.lease_table_name, var.name)
  job_table   = coalesce(var.job_table_name, "${local.lease_table}-jobs")

  # Exactly one of each pair exists (count 0 or 1).
  stream_arn  = one(concat(aws_kinesis_stream.events[*].arn, data.aws_kinesis_stream.events[*].arn))
  cluster_arn = coalesce(var.cluster_arn, one(aws_ecs_cluster.worker[*].arn))
}

# --- the stream ---------------------------------------------------------

data "aws_kinesis_stream" "events" {
  count = var.create_stream ? 0 : 1
  name  = var.stream_name
}

# Encrypted with the AWS managed key, which needs no KMS permission in
# either role; a customer managed key would need kms:Decrypt for the worker
# and kms:GenerateDataKey for Twilio's role.
resource "aws_kinesis_stream" "events" {
  count            = var.create_stream ? 1 : 0
  name             = var.stream_name
  retention_period = 24
  encryption_type  = "KMS"
  kms_key_id       = "alias/aws/kinesis"

  stream_mode_details {
    stream_mode = "ON_DEMAND"
  }
}

# --- DynamoDB: the store (src/store/dynamodb.rs) -------------------------
# With these created here, the worker runs with
# BULKWATCH_STORE__CREATE_TABLES=false and needs no CreateTable permission.

# KCL 2.x lease table layout: hash key leaseKey (S) = shard id, no sort key.
resource "aws_dynamodb_table" "leases" {
  name         = local.lease_table
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "leaseKey"

  attribute {
    name = "leaseKey"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }
}

# Job state: hash key job_sid (S); expires_at (N, epoch seconds) is the TTL
# attribute, so terminal jobs leave the table after terminal_ttl.
resource "aws_dynamodb_table" "jobs" {
  name         = local.job_table
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "job_sid"

  attribute {
    name = "job_sid"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }
}

# --- logs ---------------------------------------------------------------

resource "aws_cloudwatch_log_group" "worker" {
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
}

# --- IAM ----------------------------------------------------------------

data "aws_iam_policy_document" "ecs_tasks_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    # Only tasks of this account may assume the roles.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# The execution role: ECS itself uses it to pull the image and create log
# streams. The worker never sees it.
resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_trust.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

# The task role: what the worker's AWS calls run as.
resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_trust.json
}

locals {
  worker_policy_template = jsondecode(file("${path.module}/../iam/worker-policy.json"))

  table_arns = [aws_dynamodb_table.leases.arn, aws_dynamodb_table.jobs.arn]

  # Resources of each statement of worker-policy.json, by Sid. A Sid added
  # there and not here fails the plan, on purpose.
  statement_resources = {
    KinesisRead                   = [local.stream_arn]
    KinesisEnhancedFanOutOptional = [local.stream_arn, "${local.stream_arn}/consumer/*"]
    DynamoDbStore                 = local.table_arns
    DynamoDbCreateTablesOptional  = local.table_arns
    SqsOutputOptional             = var.sqs_queue_arns
    SnsOutputOptional             = var.sns_topic_arns
    EventBridgeOutputOptional     = var.event_bus_arns
  }

  # Which statements this deployment grants. The tables exist (above), so
  # the worker is told not to create them and needs no CreateTable.
  statement_enabled = {
    KinesisRead                   = true
    KinesisEnhancedFanOutOptional = var.enable_enhanced_fan_out
    DynamoDbStore                 = true
    DynamoDbCreateTablesOptional  = false
    SqsOutputOptional             = length(var.sqs_queue_arns) > 0
    SnsOutputOptional             = length(var.sns_topic_arns) > 0
    EventBridgeOutputOptional     = length(var.event_bus_arns) > 0
  }

  worker_policy = {
    Version = local.worker_policy_template.Version
    Statement = [
      for s in local.worker_policy_template.Statement : {
        Sid      = s.Sid
        Effect   = s.Effect
        Action   = s.Action
        Resource = local.statement_resources[s.Sid]
      } if local.statement_enabled[s.Sid]
    ]
  }
}

resource "aws_iam_role_policy" "worker" {
  name   = "${var.name}-worker"
  role   = aws_iam_role.task.id
  policy = jsonencode(local.worker_policy)
}

# --- ECS ----------------------------------------------------------------

resource "aws_ecs_cluster" "worker" {
  count = var.cluster_arn == null ? 1 : 0
  name  = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

locals {
  task_definition = jsondecode(templatefile("${path.module}/../ecs/task-definition.json", {
    family             = var.name
    cpu                = tostring(var.cpu)
    memory             = tostring(var.memory)
    execution_role_arn = aws_iam_role.execution.arn
    task_role_arn      = aws_iam_role.task.arn
    image              = var.image
    region             = local.region
    stream_name        = var.stream_name
    lease_table        = aws_dynamodb_table.leases.name
    job_table          = aws_dynamodb_table.jobs.name
    log_group          = aws_cloudwatch_log_group.worker.name
  }))

  container = local.task_definition.containerDefinitions[0]

  # The task definition's environment, with var.extra_environment added or
  # overriding by name (ECS rejects a name given twice).
  environment = merge(
    { for e in local.container.environment : e.name => e.value },
    var.extra_environment,
  )

  container_definitions = [
    merge(local.container, {
      environment = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
    })
  ]
}

resource "aws_ecs_task_definition" "worker" {
  family                   = local.task_definition.family
  requires_compatibilities = local.task_definition.requiresCompatibilities
  network_mode             = local.task_definition.networkMode
  cpu                      = local.task_definition.cpu
  memory                   = local.task_definition.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(local.container_definitions)

  runtime_platform {
    cpu_architecture        = local.task_definition.runtimePlatform.cpuArchitecture
    operating_system_family = local.task_definition.runtimePlatform.operatingSystemFamily
  }

  dynamic "volume" {
    for_each = local.task_definition.volumes
    content {
      name = volume.value.name
    }
  }
}

resource "aws_ecs_service" "worker" {
  name            = var.name
  cluster         = local.cluster_arn
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = var.desired_count
  launch_type     = "FARGATE"

  # A rolling deploy starts the new tasks before stopping the old ones; the
  # new ones take shards over through the lease table as the old ones
  # release them on SIGTERM.
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }

  propagate_tags = "SERVICE"
}
