//! DescribeClientQuotas (48): Rill sets no client quotas, so every filter matches nothing, as
//! on an Apache Kafka cluster where none were configured. (AlterClientQuotas stays unsupported
//! until quotas are enforced: storing limits that nothing applies would mislead.)

use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use crate::error::NONE;

pub fn describe(_request: DescribeClientQuotasRequest) -> DescribeClientQuotasResponse {
    DescribeClientQuotasResponse::default()
        .with_error_code(NONE)
        .with_entries(Some(Vec::new()))
}
