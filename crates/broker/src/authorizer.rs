//! Who may do what: the one place that answers "authorized operations" (Metadata,
//! DescribeCluster, DescribeGroups, DescribeTopicPartitions), and later every ACL check.
//!
//! Rill has no security yet, so the only authorizer is [`AllowAll`], which answers as Apache
//! Kafka does with no `authorizer.class.name` configured: every operation that the resource
//! type supports (Kafka's `AclEntry.supportedOperations`). Admin tools gate their UI on these
//! sets, so an empty answer would show nothing as allowed. The security work implements
//! [`Authorizer`] with ACLs; callers do not change.

/// Kafka's `AclOperation`, with its wire codes (the bit positions in an authorized-operations
/// field). Codes 0–2 (UNKNOWN, ANY, ALL) are filters, never granted themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum AclOperation {
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
}

/// The kinds of resource an operation applies to (Kafka's concrete `ResourceType`s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    /// Every operation an ACL can grant on this resource type, as Kafka 4.x defines them.
    pub fn supported_operations(self) -> &'static [AclOperation] {
        use AclOperation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
        }
    }
}

/// Decides what a principal may do. One instance per broker, shared by every handler.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// The operations `principal` may perform on the resource `(resource_type, name)`.
    fn authorized_operations(
        &self,
        principal: &str,
        resource_type: ResourceType,
        name: &str,
    ) -> Vec<AclOperation>;

    /// The same, as the protocol's 32-bit field: bit `code` set for each granted operation.
    fn authorized_operations_bits(
        &self,
        principal: &str,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        to_bit_field(&self.authorized_operations(principal, resource_type, name))
    }
}

/// The principal of every connection until authentication exists (Kafka's name for it).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// No authorizer configured: everything the resource type supports is allowed (Kafka's
/// behaviour without `authorizer.class.name`).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorized_operations(
        &self,
        _principal: &str,
        resource_type: ResourceType,
        _name: &str,
    ) -> Vec<AclOperation> {
        resource_type.supported_operations().to_vec()
    }
}

/// Kafka's `Utils.to32BitField`: one bit per operation code.
pub fn to_bit_field(operations: &[AclOperation]) -> i32 {
    operations
        .iter()
        .fold(0i32, |bits, &op| bits | (1i32 << (op as u8)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_all_grants_what_kafka_grants_without_an_authorizer() {
        let a = AllowAll;
        let bits = |t| a.authorized_operations_bits(ANONYMOUS, t, "x");
        // READ 3, WRITE 4, CREATE 5, DELETE 6, ALTER 7, DESCRIBE 8, DESCRIBE_CONFIGS 10,
        // ALTER_CONFIGS 11.
        assert_eq!(bits(ResourceType::Topic), 0b1101_1111_1000);
        // READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
        assert_eq!(bits(ResourceType::Group), 0b1101_0100_1000);
        // CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11,
        // IDEMPOTENT_WRITE 12.
        assert_eq!(bits(ResourceType::Cluster), 0b1_1111_1010_0000);
        for t in [
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
        ] {
            let bits = bits(t);
            assert_eq!(bits & 0b111, 0, "UNKNOWN, ANY and ALL are never granted");
            assert_ne!(bits, i32::MIN, "not the 'omitted' marker");
        }
    }
}
