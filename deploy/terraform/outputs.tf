output "service_name" {
  value = aws_ecs_service.worker.name
}

output "task_definition_arn" {
  value = aws_ecs_task_definition.worker.arn
}

output "task_role_arn" {
  value = aws_iam_role.task.arn
}

output "lease_table" {
  value = aws_dynamodb_table.leases.name
}

output "job_table" {
  value = aws_dynamodb_table.jobs.name
}

output "log_group" {
  value = aws_cloudwatch_log_group.worker.name
}

output "stream_arn" {
  value = local.stream_arn
}

# What to put in the Kinesis sink's sink_configuration (with your external
# id): { "arn": stream_arn, "role_arn": twilio_sink_role_arn, "external_id": ... }
output "twilio_sink_role_arn" {
  value = one(aws_iam_role.twilio_sink[*].arn)
}
