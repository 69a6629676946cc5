package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialDeletion;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.errors.ResourceNotFoundException;
import org.apache.kafka.common.errors.UnacceptableCredentialException;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Client quotas and SCRAM credentials from Kafka's Java Admin, as `kafka-configs.sh` uses them,
 * each on its own rill (a quota on a shared broker would throttle the other tests): set,
 * describe, delete (value null), kept across a SIGKILL and restart; and the byte-rate quotas
 * enforced on a real producer and consumer (throttle time reported, rate held near the quota).
 */
@Timeout(value = 300, unit = TimeUnit.SECONDS)
class ClientQuotasTest {

    private static final long CALL_S = 30;

    private static Properties props(String address) {
        Properties p = Broker.props();
        p.put("bootstrap.servers", address);
        return p;
    }

    private static Map<ClientQuotaEntity, Map<String, Double>> describeAll(Admin admin) throws Exception {
        return admin.describeClientQuotas(ClientQuotaFilter.all()).entities().get(CALL_S, TimeUnit.SECONDS);
    }

    private static void alter(Admin admin, ClientQuotaEntity entity, String key, Double value) throws Exception {
        admin.alterClientQuotas(List.of(new ClientQuotaAlteration(entity,
                List.of(new ClientQuotaAlteration.Op(key, value))))).all().get(CALL_S, TimeUnit.SECONDS);
    }

    private static Map<String, String> entity(String... typeAndName) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < typeAndName.length; i += 2) m.put(typeAndName[i], typeAndName[i + 1]);
        return m;
    }

    @Test
    void quotasAndCredentialsRoundTripAndSurviveRestart() throws Exception {
        Broker.Started rill = Broker.start();
        try {
            ClientQuotaEntity alice = new ClientQuotaEntity(entity(ClientQuotaEntity.USER, "alice",
                    ClientQuotaEntity.CLIENT_ID, null));
            ClientQuotaEntity defaultUser = new ClientQuotaEntity(entity(ClientQuotaEntity.USER, null));
            ClientQuotaEntity ip = new ClientQuotaEntity(entity(ClientQuotaEntity.IP, "127.0.0.1"));
            try (Admin admin = Admin.create(props(rill.address()))) {
                assertTrue(describeAll(admin).isEmpty());
                alter(admin, alice, "producer_byte_rate", 1024.0);
                alter(admin, defaultUser, "request_percentage", 12.5);
                alter(admin, ip, "connection_creation_rate", 10.0);

                // Refusals as Kafka's (INVALID_REQUEST), and validateOnly stores nothing.
                for (var bad : List.of(
                        new ClientQuotaAlteration.Op("no_such_key", 1.0),
                        new ClientQuotaAlteration.Op("producer_byte_rate", -5.0),
                        new ClientQuotaAlteration.Op("consumer_byte_rate", 1.5),
                        new ClientQuotaAlteration.Op("connection_creation_rate", 1.0))) {
                    ExecutionException e = assertThrows(ExecutionException.class, () -> admin.alterClientQuotas(
                            List.of(new ClientQuotaAlteration(alice, List.of(bad)))).all().get(CALL_S, TimeUnit.SECONDS));
                    assertInstanceOf(InvalidRequestException.class, e.getCause(), bad.toString());
                }
                ExecutionException mixed = assertThrows(ExecutionException.class, () -> admin.alterClientQuotas(List.of(
                        new ClientQuotaAlteration(new ClientQuotaEntity(entity(ClientQuotaEntity.IP, "127.0.0.1",
                                ClientQuotaEntity.USER, "bob")), List.of(new ClientQuotaAlteration.Op("connection_creation_rate", 1.0)))))
                        .all().get(CALL_S, TimeUnit.SECONDS));
                assertInstanceOf(InvalidRequestException.class, mixed.getCause());
                admin.alterClientQuotas(List.of(new ClientQuotaAlteration(new ClientQuotaEntity(entity(ClientQuotaEntity.CLIENT_ID, "dry")),
                                List.of(new ClientQuotaAlteration.Op("consumer_byte_rate", 100.0)))),
                        new org.apache.kafka.clients.admin.AlterClientQuotasOptions().validateOnly(true))
                        .all().get(CALL_S, TimeUnit.SECONDS);

                // SCRAM: one user with both mechanisms, refusals as Kafka's.
                admin.alterUserScramCredentials(List.of(
                        new UserScramCredentialUpsertion("alice", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), "pw"),
                        new UserScramCredentialUpsertion("carol", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), "pw2")))
                        .all().get(CALL_S, TimeUnit.SECONDS);
                ExecutionException few = assertThrows(ExecutionException.class, () -> admin.alterUserScramCredentials(List.of(
                        new UserScramCredentialUpsertion("dave", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4095), "pw")))
                        .all().get(CALL_S, TimeUnit.SECONDS));
                assertInstanceOf(UnacceptableCredentialException.class, few.getCause());
                ExecutionException missing = assertThrows(ExecutionException.class, () -> admin.alterUserScramCredentials(List.of(
                        new UserScramCredentialDeletion("nobody", ScramMechanism.SCRAM_SHA_256))).all().get(CALL_S, TimeUnit.SECONDS));
                assertInstanceOf(ResourceNotFoundException.class, missing.getCause());
            }

            rill = rill.killAndRestart();
            try (Admin admin = Admin.create(props(rill.address()))) {
                Map<ClientQuotaEntity, Map<String, Double>> all = describeAll(admin);
                assertEquals(Map.of(
                        alice, Map.of("producer_byte_rate", 1024.0),
                        defaultUser, Map.of("request_percentage", 12.5),
                        ip, Map.of("connection_creation_rate", 10.0)), all);
                // Filters: the user "alice" entity (not strict: with its client default), user defaults only.
                var aliceOnly = admin.describeClientQuotas(ClientQuotaFilter.contains(List.of(
                        ClientQuotaFilterComponent.ofEntity(ClientQuotaEntity.USER, "alice"))))
                        .entities().get(CALL_S, TimeUnit.SECONDS);
                assertEquals(List.of(alice), new ArrayList<>(aliceOnly.keySet()));
                var strictDefault = admin.describeClientQuotas(ClientQuotaFilter.containsOnly(List.of(
                        ClientQuotaFilterComponent.ofDefaultEntity(ClientQuotaEntity.USER))))
                        .entities().get(CALL_S, TimeUnit.SECONDS);
                assertEquals(List.of(defaultUser), new ArrayList<>(strictDefault.keySet()));

                Map<String, UserScramCredentialsDescription> users =
                        admin.describeUserScramCredentials().all().get(CALL_S, TimeUnit.SECONDS);
                assertEquals(2, users.size());
                assertEquals(List.of(new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)),
                        users.get("alice").credentialInfos());
                ExecutionException unknown = assertThrows(ExecutionException.class, () ->
                        admin.describeUserScramCredentials(List.of("nobody")).description("nobody").get(CALL_S, TimeUnit.SECONDS));
                assertInstanceOf(ResourceNotFoundException.class, unknown.getCause());

                // Delete (value null) and SCRAM deletion.
                alter(admin, alice, "producer_byte_rate", null);
                alter(admin, ip, "connection_creation_rate", null);
                admin.alterUserScramCredentials(List.of(new UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_512)))
                        .all().get(CALL_S, TimeUnit.SECONDS);
            }

            rill = rill.killAndRestart();
            try (Admin admin = Admin.create(props(rill.address()))) {
                assertEquals(Map.of(defaultUser, Map.of("request_percentage", 12.5)), describeAll(admin));
                assertEquals(List.of("alice"), new ArrayList<>(
                        admin.describeUserScramCredentials().all().get(CALL_S, TimeUnit.SECONDS).keySet()));
            }
        } finally {
            rill.stop();
        }
    }

    private static double metric(Map<MetricName, ? extends Metric> metrics, String group, String name) {
        return metrics.entrySet().stream()
                .filter(e -> e.getKey().group().equals(group) && e.getKey().name().equals(name))
                .mapToDouble(e -> ((Number) e.getValue().metricValue()).doubleValue())
                .filter(v -> !Double.isNaN(v))
                .max().orElse(0.0);
    }

    /** Quota in bytes/s for the throttled clients; the data is RUN_QUOTAS × it, so that the
     *  first 10 s the rate window credits (Kafka's 11 one-second samples) are a third of it. */
    private static final double QUOTA_BYTES_PER_S = 64 * 1024;
    private static final int RUN_QUOTAS = 30;
    private static final int VALUE_BYTES = 1024;

    /** Produces `count` values; returns the seconds taken and the producer's largest throttle time. */
    private static double[] produce(String address, String clientId, String topic, int count) throws Exception {
        Properties p = props(address);
        p.put("client.id", clientId);
        p.put("acks", "1");
        p.put("linger.ms", "5");
        p.put("enable.idempotence", "false");
        p.put("delivery.timeout.ms", "120000");
        p.put("request.timeout.ms", "60000");
        byte[] value = new byte[VALUE_BYTES];
        Arrays.fill(value, (byte) 'q');
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer())) {
            // Metadata first, so the timing covers produce requests only.
            producer.partitionsFor(topic);
            long start = System.nanoTime();
            List<Future<RecordMetadata>> sent = new ArrayList<>(count);
            for (int i = 0; i < count; i++) sent.add(producer.send(new ProducerRecord<>(topic, 0, null, value)));
            producer.flush();
            for (Future<RecordMetadata> f : sent) f.get(CALL_S, TimeUnit.SECONDS);
            double seconds = (System.nanoTime() - start) / 1e9;
            return new double[] {seconds, metric(producer.metrics(), "producer-metrics", "produce-throttle-time-max")};
        }
    }

    @Test
    void byteRateQuotasThrottleAProducerAndAConsumer() throws Exception {
        Broker.Started rill = Broker.start();
        try (Admin admin = Admin.create(props(rill.address()))) {
            String topic = Broker.uniqueTopic("quota");
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(CALL_S, TimeUnit.SECONDS);
            ClientQuotaEntity producerEntity = new ClientQuotaEntity(entity(ClientQuotaEntity.CLIENT_ID, "quota-producer"));
            ClientQuotaEntity consumerEntity = new ClientQuotaEntity(entity(ClientQuotaEntity.CLIENT_ID, "quota-consumer"));
            alter(admin, producerEntity, "producer_byte_rate", QUOTA_BYTES_PER_S);
            alter(admin, consumerEntity, "consumer_byte_rate", QUOTA_BYTES_PER_S);
            int count = (int) (RUN_QUOTAS * QUOTA_BYTES_PER_S / VALUE_BYTES);
            long bytes = (long) count * VALUE_BYTES;

            double[] throttled = produce(rill.address(), "quota-producer", topic, count);
            double rate = bytes / throttled[0];
            System.out.printf("quota producer: %d bytes in %.1f s = %.0f B/s (quota %.0f), throttle max %.0f ms%n",
                    bytes, throttled[0], rate, QUOTA_BYTES_PER_S, throttled[1]);
            assertTrue(throttled[1] > 0, "the producer was told to back off");
            assertTrue(rate < 2 * QUOTA_BYTES_PER_S, "producer rate " + rate + " held near the quota");

            // Consumer: reads what was produced, under its own quota.
            Properties cp = props(rill.address());
            cp.put("client.id", "quota-consumer");
            cp.put("enable.auto.commit", "false");
            cp.put("auto.offset.reset", "earliest");
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
                TopicPartition tp = new TopicPartition(topic, 0);
                consumer.assign(List.of(tp));
                consumer.seekToBeginning(List.of(tp));
                consumer.position(tp);
                long start = System.nanoTime();
                long deadline = start + TimeUnit.SECONDS.toNanos(180);
                int got = 0;
                while (got < count && System.nanoTime() < deadline) got += consumer.poll(Duration.ofMillis(500)).count();
                assertEquals(count, got, "all records consumed");
                double seconds = (System.nanoTime() - start) / 1e9;
                double fetchRate = bytes / seconds;
                double fetchThrottle = metric(consumer.metrics(), "consumer-fetch-manager-metrics", "fetch-throttle-time-max");
                System.out.printf("quota consumer: %d record bytes in %.1f s = %.0f B/s, throttle max %.0f ms%n",
                        bytes, seconds, fetchRate, fetchThrottle);
                assertTrue(fetchThrottle > 0, "the consumer was told to back off");
                assertTrue(fetchRate < 2 * QUOTA_BYTES_PER_S, "consumer rate " + fetchRate + " held near the quota");
            }

            // Quota removed: the same client is not throttled any more.
            alter(admin, producerEntity, "producer_byte_rate", null);
            double[] free = produce(rill.address(), "quota-producer", topic, count);
            System.out.printf("unthrottled producer: %.1f s, throttle max %.0f ms%n", free[0], free[1]);
            assertEquals(0.0, free[1], "no throttle once the quota is removed");
        } finally {
            rill.stop();
        }
    }
}
