# The role Twilio Event Streams assumes to write into the stream (a Kinesis
# sink). Twilio's account is trusted only with the external id you give
# Twilio in the sink's configuration, which guards against the confused
# deputy problem. The statements are those of ../iam/twilio-sink-*.json.

data "aws_iam_policy_document" "twilio_sink_trust" {
  count = var.create_twilio_sink_role ? 1 : 0

  statement {
    sid     = "TwilioEventStreamsAssumeRole"
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${var.twilio_aws_account_id}:root"]
    }
    condition {
      test     = "StringEquals"
      variable = "sts:ExternalId"
      values   = [var.twilio_external_id]
    }
  }

  lifecycle {
    precondition {
      condition     = var.twilio_aws_account_id != null && var.twilio_external_id != null
      error_message = "create_twilio_sink_role needs twilio_aws_account_id and twilio_external_id."
    }
  }
}

data "aws_iam_policy_document" "twilio_sink" {
  count = var.create_twilio_sink_role ? 1 : 0

  statement {
    sid       = "TwilioSinkWrite"
    actions   = ["kinesis:ListShards", "kinesis:PutRecord", "kinesis:PutRecords"]
    resources = [local.stream_arn]
  }

  # DescribeLimits is account-wide: IAM accepts no resource narrower than *.
  statement {
    sid       = "TwilioSinkDescribeLimits"
    actions   = ["kinesis:DescribeLimits"]
    resources = ["*"]
  }
}

resource "aws_iam_role" "twilio_sink" {
  count              = var.create_twilio_sink_role ? 1 : 0
  name               = "${var.name}-twilio-sink"
  description        = "Assumed by Twilio Event Streams to write events into ${var.stream_name}."
  assume_role_policy = data.aws_iam_policy_document.twilio_sink_trust[0].json
}

resource "aws_iam_role_policy" "twilio_sink" {
  count  = var.create_twilio_sink_role ? 1 : 0
  name   = "kinesis-sink"
  role   = aws_iam_role.twilio_sink[0].id
  policy = data.aws_iam_policy_document.twilio_sink[0].json
}
