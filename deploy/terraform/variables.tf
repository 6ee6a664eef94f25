# Every account id, ARN and name comes from a variable or from the provider's
# own view of the account (data sources in main.tf); none is written here.

variable "name" {
  description = "Name of the service, the task family, the roles and the log group. It is also the default lease table name (KCL names the lease table after the application)."
  type        = string
  default     = "bulkwatch"
}

variable "stream_name" {
  description = "The Kinesis stream that Twilio Event Streams writes to."
  type        = string
}

variable "create_stream" {
  description = "Create the stream (on-demand capacity) instead of reading an existing one."
  type        = bool
  default     = false
}

variable "image" {
  description = "The bulkwatch image, e.g. <registry>/bulkwatch:<tag> built from deploy/Dockerfile. Prefer an immutable digest (…@sha256:…)."
  type        = string
}

variable "lease_table_name" {
  description = "DynamoDB lease table (KCL layout, hash key leaseKey). Default: var.name."
  type        = string
  default     = null
}

variable "job_table_name" {
  description = "DynamoDB job-state table (hash key job_sid, TTL on expires_at). Default: \"<lease table>-jobs\"."
  type        = string
  default     = null
}

variable "cluster_arn" {
  description = "An existing ECS cluster to run in. Null creates one named var.name."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets of the tasks. They need a route to Kinesis, DynamoDB, CloudWatch Logs and the image registry (NAT or VPC endpoints)."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups of the tasks. The worker needs only outbound HTTPS; allow inbound 9090 only from your Prometheus, if any."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give tasks a public IP (public subnets without NAT)."
  type        = bool
  default     = false
}

variable "desired_count" {
  description = "Number of workers. They share the shards through the lease table; more workers than shards leaves some idle (ready, holding nothing)."
  type        = number
  default     = 1
}

variable "cpu" {
  description = "Fargate task CPU units."
  type        = number
  default     = 256
}

variable "memory" {
  description = "Fargate task memory (MiB)."
  type        = number
  default     = 512
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention of the worker's log group."
  type        = number
  default     = 30
}

variable "extra_environment" {
  description = "More environment variables for the worker, e.g. outputs: { BULKWATCH_OUTPUT = \"[{type=\\\"sqs\\\", queue_url=\\\"…\\\"}]\" }. Overrides the task definition's values of the same name."
  type        = map(string)
  default     = {}
}

variable "enable_enhanced_fan_out" {
  description = "Grant the optional enhanced fan-out actions (SubscribeToShard, RegisterStreamConsumer, DescribeStreamConsumer). The worker reads with GetRecords today; leave false unless you run a build that uses enhanced fan-out."
  type        = bool
  default     = false
}

variable "sqs_queue_arns" {
  description = "Queues the worker sends to (sqs outputs and an sqs dead-letter). Empty: no SQS permission."
  type        = list(string)
  default     = []
}

variable "sns_topic_arns" {
  description = "Topics the worker publishes to (sns outputs). Empty: no SNS permission."
  type        = list(string)
  default     = []
}

variable "event_bus_arns" {
  description = "Event buses the worker puts events on (eventbridge outputs). Empty: no EventBridge permission."
  type        = list(string)
  default     = []
}

variable "create_twilio_sink_role" {
  description = "Create the role Twilio Event Streams assumes to write to the stream (see deploy/README.md)."
  type        = bool
  default     = false
}

variable "twilio_aws_account_id" {
  description = "Twilio's AWS account id, from the trust policy in Twilio's Kinesis sink instructions (deploy/README.md says where). Required when create_twilio_sink_role is true."
  type        = string
  default     = null

  validation {
    condition     = var.twilio_aws_account_id == null || can(regex("^[0-9]{12}$", var.twilio_aws_account_id))
    error_message = "twilio_aws_account_id must be a 12-digit AWS account id."
  }
}

variable "twilio_external_id" {
  description = "The external id you give Twilio in the sink's configuration (a random secret of your choosing, e.g. `openssl rand -hex 32`). Required when create_twilio_sink_role is true."
  type        = string
  default     = null
  sensitive   = true
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
