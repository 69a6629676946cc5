package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewPartitionReassignment;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;
import org.apache.kafka.common.TopicPartitionReplica;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.errors.InvalidReplicaAssignmentException;
import org.apache.kafka.common.errors.LogDirNotFoundException;
import org.apache.kafka.common.errors.NoReassignmentInProgressException;
import org.apache.kafka.common.errors.ResourceNotFoundException;
import org.apache.kafka.common.errors.SecurityDisabledException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.errors.UnsupportedByAuthenticationException;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Cluster-admin calls of the Java Admin on one node with no authorizer, no SASL and no other
 * brokers: each answered as a single-node Apache Kafka answers it.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class ClusterAdminTest {
    static <T> Throwable failure(org.apache.kafka.common.KafkaFuture<T> f) throws Exception {
        ExecutionException e = assertThrows(ExecutionException.class, () -> f.get(30, TimeUnit.SECONDS));
        return e.getCause();
    }

    static <T> T ok(org.apache.kafka.common.KafkaFuture<T> f) throws Exception {
        return f.get(30, TimeUnit.SECONDS);
    }

    @Test
    void aclsAreRefusedWithoutAnAuthorizer() throws Exception {
        String topic = Broker.uniqueTopic("acls");
        try (Admin admin = Admin.create(Broker.props())) {
            assertInstanceOf(SecurityDisabledException.class, failure(admin.describeAcls(AclBindingFilter.ANY).values()));
            AclBinding binding = new AclBinding(new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
                    new AccessControlEntry("User:a", "*", AclOperation.READ, AclPermissionType.ALLOW));
            assertInstanceOf(SecurityDisabledException.class, failure(admin.createAcls(List.of(binding)).all()));
            assertInstanceOf(SecurityDisabledException.class, failure(admin.deleteAcls(List.of(AclBindingFilter.ANY)).all()));
        }
    }

    @Test
    void electionsAndReassignmentsOnOneNode() throws Exception {
        String topic = Broker.uniqueTopic("placement");
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get(30, TimeUnit.SECONDS);
            AdminTest.awaitServing(admin, topic, 2);
            TopicPartition tp0 = new TopicPartition(topic, 0);
            TopicPartition unknown = new TopicPartition(topic + "-nope", 0);
            int node = ok(admin.describeCluster().nodes()).iterator().next().id();
            for (ElectionType type : ElectionType.values()) {
                Map<TopicPartition, Optional<Throwable>> r = ok(admin.electLeaders(type, Set.of(tp0, unknown)).partitions());
                assertInstanceOf(ElectionNotNeededException.class, r.get(tp0).orElseThrow(), type.toString());
                assertInstanceOf(UnknownTopicOrPartitionException.class, r.get(unknown).orElseThrow(), type.toString());
            }
            assertEquals(Map.of(), ok(admin.electLeaders(ElectionType.PREFERRED, null).partitions()));
            assertEquals(Map.of(), ok(admin.listPartitionReassignments().reassignments()));
            assertEquals(Map.of(), ok(admin.listPartitionReassignments(Set.of(tp0)).reassignments()));
            ok(admin.alterPartitionReassignments(Map.of(tp0, Optional.of(new NewPartitionReassignment(List.of(node))))).all());
            assertInstanceOf(InvalidReplicaAssignmentException.class, failure(admin.alterPartitionReassignments(
                    Map.of(tp0, Optional.of(new NewPartitionReassignment(List.of(node + 7))))).all()));
            assertInstanceOf(NoReassignmentInProgressException.class,
                    failure(admin.alterPartitionReassignments(Map.of(tp0, Optional.empty())).all()));
            assertInstanceOf(UnknownTopicOrPartitionException.class, failure(admin.alterPartitionReassignments(
                    Map.of(unknown, Optional.of(new NewPartitionReassignment(List.of(node))))).all()));
            assertInstanceOf(LogDirNotFoundException.class, failure(admin.alterReplicaLogDirs(
                    Map.of(new TopicPartitionReplica(topic, 0, node), "/nonexistent-dir")).all()));
            admin.deleteTopics(List.of(topic)).all().get(30, TimeUnit.SECONDS);
        }
    }

    /**
     * Without security: no SCRAM credential or quota for names nothing has set, and delegation
     * tokens refused as Kafka refuses them without SASL. The broker is shared with other test
     * classes (AdminAuditTest stores a SCRAM user), so only names of this test's own are
     * asserted absent.
     */
    @Test
    void credentialsTokensAndQuotasWithoutSecurity() throws Exception {
        String user = "cluster-admin-" + java.util.UUID.randomUUID();
        try (Admin admin = Admin.create(Broker.props())) {
            assertFalse(ok(admin.describeUserScramCredentials().all()).containsKey(user));
            assertInstanceOf(ResourceNotFoundException.class,
                    failure(admin.describeUserScramCredentials(List.of(user)).description(user)));
            assertInstanceOf(UnsupportedByAuthenticationException.class, failure(admin.describeDelegationToken().delegationTokens()));
            assertInstanceOf(UnsupportedByAuthenticationException.class, failure(admin.createDelegationToken().delegationToken()));
            ClientQuotaFilter mine = ClientQuotaFilter.containsOnly(List.of(
                    ClientQuotaFilterComponent.ofEntity(ClientQuotaEntity.CLIENT_ID, user)));
            assertEquals(Map.of(), ok(admin.describeClientQuotas(mine).entities()));
        }
    }
}
