package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionReplica;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The audit of Kafka 4.4's {@link Admin}: every method that talks to the cluster, called once
 * against a single node, its outcome reduced to "ok" or the exception Kafka's client raises.
 * Kafka 4.4's outcomes are recorded in src/test/resources/kafka-admin-audit.tsv (run with
 * KAFKA_BOOTSTRAP set and RECORD_ADMIN_AUDIT=1 to rewrite it); against rill each outcome must
 * equal Kafka's, except the differences listed in {@link #KNOWN_DIFFERENCES} (each documented
 * in docs/admin-api.md). The arguments name things that do not exist where that is the point
 * (an unknown group, a broker id that is not there), so both brokers answer from a fresh state.
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class AdminAuditTest {

    private static final long CALL_S = 30;

    /** Methods where rill answers otherwise than Kafka 4.4, with the reason (docs/admin-api.md). */
    static final Map<String, String> KNOWN_DIFFERENCES = Map.ofEntries();

    interface Call {
        Object run(Admin admin) throws Exception;
    }

    static String outcome(Admin admin, Call call) {
        try {
            Object r = call.run(admin);
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }

    static <T> T get(KafkaFuture<T> f) throws Exception {
        return f.get(CALL_S, TimeUnit.SECONDS);
    }

    /** The calls, in the order of the table in docs/admin-api.md. */
    static Map<String, Call> calls(String topic, String spare, int node) {
        TopicPartition tp = new TopicPartition(topic, 0);
        String group = "audit-no-such-group";
        String txn = "audit-no-such-txn";
        ResourcePattern aclTopic = new ResourcePattern(ResourceType.TOPIC, "audit-acl", PatternType.LITERAL);
        AclBinding acl = new AclBinding(aclTopic,
                new AccessControlEntry("User:audit", "*", AclOperation.READ, AclPermissionType.ALLOW));
        AclBindingFilter aclFilter = new AclBindingFilter(
                new ResourcePatternFilter(ResourceType.TOPIC, "audit-acl", PatternType.LITERAL), AccessControlEntryFilter.ANY);
        ConfigResource topicRes = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        ClientQuotaEntity quotaEntity = new ClientQuotaEntity(Map.of(ClientQuotaEntity.USER, "audit"));
        Map<String, Call> c = new LinkedHashMap<>();
        c.put("createTopics", a -> get(a.createTopics(List.of(new NewTopic(spare, 1, (short) 1))).all()));
        c.put("listTopics", a -> get(a.listTopics().names()));
        c.put("describeTopics", a -> get(a.describeTopics(List.of(topic)).allTopicNames()));
        c.put("describeTopics(unknown)", a -> get(a.describeTopics(List.of("audit-no-such-topic")).allTopicNames()));
        c.put("createPartitions", a -> get(a.createPartitions(Map.of(topic, NewPartitions.increaseTo(2))).all()));
        c.put("deleteTopics", a -> get(a.deleteTopics(List.of(spare)).all()));
        c.put("describeConfigs", a -> get(a.describeConfigs(List.of(topicRes)).all()));
        c.put("incrementalAlterConfigs", a -> get(a.incrementalAlterConfigs(Map.of(topicRes, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET)))).all()));
        c.put("listConfigResources", a -> get(a.listConfigResources().all()));
        c.put("listClientMetricsResources", a -> get(a.listClientMetricsResources().all()));
        c.put("listOffsets", a -> get(a.listOffsets(Map.of(tp, OffsetSpec.latest())).all()));
        c.put("deleteRecords", a -> get(a.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(0))).all()));
        c.put("describeCluster", a -> get(a.describeCluster().nodes()));
        c.put("describeFeatures", a -> get(a.describeFeatures().featureMetadata()));
        c.put("updateFeatures(validateOnly)", a -> get(a.updateFeatures(
                Map.of("group.version", new FeatureUpdate((short) 1, FeatureUpdate.UpgradeType.UPGRADE)),
                new UpdateFeaturesOptions().validateOnly(true)).all()));
        c.put("describeMetadataQuorum", a -> get(a.describeMetadataQuorum().quorumInfo()));
        c.put("unregisterBroker", a -> get(a.unregisterBroker(node + 100).all()));
        c.put("unregisterController", a -> get(a.unregisterController(node + 100).all()));
        c.put("addRaftVoter", a -> get(a.addRaftVoter(node + 100, Uuid.randomUuid(),
                Set.of(new RaftVoterEndpoint("CONTROLLER", "127.0.0.1", 1))).all()));
        c.put("removeRaftVoter", a -> get(a.removeRaftVoter(node + 100, Uuid.randomUuid()).all()));
        c.put("describeLogDirs", a -> get(a.describeLogDirs(List.of(node)).allDescriptions()));
        c.put("describeReplicaLogDirs", a -> get(a.describeReplicaLogDirs(
                List.of(new TopicPartitionReplica(topic, 0, node))).all()));
        c.put("alterReplicaLogDirs", a -> get(a.alterReplicaLogDirs(
                Map.of(new TopicPartitionReplica(topic, 0, node), "/audit/no/such/dir")).all()));
        c.put("electLeaders", a -> get(a.electLeaders(ElectionType.PREFERRED, Set.of(tp)).all()));
        c.put("alterPartitionReassignments(cancel)", a -> get(a.alterPartitionReassignments(
                Map.of(tp, Optional.empty())).all()));
        c.put("listPartitionReassignments", a -> get(a.listPartitionReassignments().reassignments()));
        c.put("createAcls", a -> get(a.createAcls(List.of(acl)).all()));
        c.put("describeAcls", a -> get(a.describeAcls(aclFilter).values()));
        c.put("deleteAcls", a -> get(a.deleteAcls(List.of(aclFilter)).all()));
        c.put("describeClientQuotas", a -> get(a.describeClientQuotas(ClientQuotaFilter.all()).entities()));
        c.put("alterClientQuotas", a -> get(a.alterClientQuotas(List.of(new ClientQuotaAlteration(quotaEntity,
                List.of(new ClientQuotaAlteration.Op("producer_byte_rate", 1000.0))))).all()));
        c.put("describeUserScramCredentials", a -> get(a.describeUserScramCredentials().all()));
        c.put("alterUserScramCredentials", a -> get(a.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(
                "audit", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), "audit-password"))).all()));
        c.put("createDelegationToken", a -> get(a.createDelegationToken().delegationToken()));
        c.put("describeDelegationToken", a -> get(a.describeDelegationToken().delegationTokens()));
        c.put("renewDelegationToken", a -> get(a.renewDelegationToken("audit".getBytes(StandardCharsets.UTF_8)).expiryTimestamp()));
        c.put("expireDelegationToken", a -> get(a.expireDelegationToken("audit".getBytes(StandardCharsets.UTF_8)).expiryTimestamp()));
        c.put("listGroups", a -> get(a.listGroups().all()));
        c.put("listConsumerGroups", a -> get(a.listConsumerGroups().all()));
        c.put("describeConsumerGroups", a -> get(a.describeConsumerGroups(List.of(group)).all()));
        c.put("describeClassicGroups", a -> get(a.describeClassicGroups(List.of(group)).all()));
        c.put("listConsumerGroupOffsets", a -> get(a.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata()));
        c.put("alterConsumerGroupOffsets", a -> get(a.alterConsumerGroupOffsets(group,
                Map.of(tp, new OffsetAndMetadata(0))).all()));
        c.put("deleteConsumerGroupOffsets", a -> get(a.deleteConsumerGroupOffsets(group, Set.of(tp)).all()));
        c.put("removeMembersFromConsumerGroup", a -> get(a.removeMembersFromConsumerGroup(group,
                new RemoveMembersFromConsumerGroupOptions()).all()));
        c.put("deleteConsumerGroups", a -> get(a.deleteConsumerGroups(List.of(group)).all()));
        c.put("describeShareGroups", a -> get(a.describeShareGroups(List.of(group)).all()));
        c.put("listShareGroupOffsets", a -> get(a.listShareGroupOffsets(
                Map.of(group, new ListShareGroupOffsetsSpec())).all()));
        c.put("alterShareGroupOffsets", a -> get(a.alterShareGroupOffsets(group, Map.of(tp, 0L)).all()));
        c.put("deleteShareGroupOffsets", a -> get(a.deleteShareGroupOffsets(group, Set.of(topic)).all()));
        c.put("deleteShareGroups", a -> get(a.deleteShareGroups(List.of(group)).all()));
        c.put("describeStreamsGroups", a -> get(a.describeStreamsGroups(List.of(group)).all()));
        c.put("listStreamsGroupOffsets", a -> get(a.listStreamsGroupOffsets(
                Map.of(group, new ListStreamsGroupOffsetsSpec())).all()));
        c.put("alterStreamsGroupOffsets", a -> get(a.alterStreamsGroupOffsets(group,
                Map.of(tp, new OffsetAndMetadata(0))).all()));
        c.put("deleteStreamsGroupOffsets", a -> get(a.deleteStreamsGroupOffsets(group, Set.of(tp)).all()));
        c.put("deleteStreamsGroups", a -> get(a.deleteStreamsGroups(List.of(group)).all()));
        c.put("describeProducers", a -> get(a.describeProducers(List.of(tp)).all()));
        c.put("listTransactions", a -> get(a.listTransactions().all()));
        c.put("describeTransactions", a -> get(a.describeTransactions(List.of(txn)).all()));
        c.put("abortTransaction", a -> get(a.abortTransaction(new AbortTransactionSpec(tp, 12345L, (short) 0, 0)).all()));
        c.put("fenceProducers", a -> get(a.fenceProducers(List.of(txn)).all()));
        c.put("forceTerminateTransaction", a -> get(a.forceTerminateTransaction(txn).result()));
        c.put("clientInstanceId", a -> a.clientInstanceId(Duration.ofSeconds(5)));
        return c;
    }

    static Path fixture() {
        return Path.of("src/test/resources/kafka-admin-audit.tsv");
    }

    @Test
    void everyAdminMethodAnswersAsKafka() throws Exception {
        boolean kafka = TopicConfigsTest.againstKafka();
        Map<String, String> outcomes = new LinkedHashMap<>();
        try (Admin admin = Admin.create(Broker.props())) {
            String topic = TopicConfigsTest.create(admin, "audit", Map.of());
            AdminTest.awaitServing(admin, topic, 1);
            int node = admin.describeCluster().nodes().get(CALL_S, TimeUnit.SECONDS).iterator().next().id();
            for (var e : calls(topic, Broker.uniqueTopic("audit-spare"), node).entrySet()) {
                String result = outcome(admin, e.getValue());
                outcomes.put(e.getKey(), result);
                System.out.println("admin-audit\t" + e.getKey() + "\t" + result);
            }
        }
        if (kafka) {
            if (System.getenv("RECORD_ADMIN_AUDIT") != null) {
                StringBuilder b = new StringBuilder();
                outcomes.forEach((m, r) -> b.append(m).append('\t').append(r).append('\n'));
                Files.writeString(fixture(), b.toString(), StandardCharsets.UTF_8);
            }
            return;
        }
        Map<String, String> recorded = new TreeMap<>();
        for (String line : Files.readAllLines(fixture(), StandardCharsets.UTF_8)) {
            String[] f = line.split("\t");
            recorded.put(f[0], f[1]);
        }
        assertEquals(new TreeMap<>(outcomes).keySet(), recorded.keySet(), "the same methods as recorded");
        List<String> differ = new ArrayList<>();
        for (var e : outcomes.entrySet()) {
            String expected = recorded.get(e.getKey());
            boolean same = expected.equals(e.getValue());
            if (KNOWN_DIFFERENCES.containsKey(e.getKey())) {
                assertFalse(same, e.getKey() + " now answers as Kafka: drop it from KNOWN_DIFFERENCES and docs/admin-api.md");
            } else if (!same) {
                differ.add(e.getKey() + ": rill " + e.getValue() + ", Kafka " + expected);
            }
        }
        assertTrue(differ.isEmpty(), String.join("\n", differ));
    }
}
