package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.SharePartitionOffsetInfo;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The share group admin calls of Kafka 4.4's {@code Admin}: listShareGroupOffsets,
 * alterShareGroupOffsets, deleteShareGroupOffsets and deleteShareGroups, with the errors a
 * group with a member gets (GroupNotEmpty), an unknown partition (UnknownTopicOrPartition)
 * and a deleted group (GroupIdNotFound), and consumption restarting at an altered offset.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class ShareAdminTest {
    /** Whether the suite runs against Apache Kafka (KAFKA_BOOTSTRAP set), not rill. */
    static final boolean KAFKA = System.getenv("KAFKA_BOOTSTRAP") != null
            && !System.getenv("KAFKA_BOOTSTRAP").isEmpty();

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        return Admin.create(p);
    }

    /** Polls until `count` records were received, accepting each; key -> delivery count. */
    static Map<Integer, Short> acceptAll(KafkaShareConsumer<String, String> consumer, int count) {
        Map<Integer, Short> got = new TreeMap<>();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (got.size() < count && System.nanoTime() < deadline) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(500))) {
                assertNull(got.put(Integer.parseInt(r.key()), r.deliveryCount().orElseThrow()),
                        "record " + r.key() + " received twice");
                consumer.acknowledge(r, AcknowledgeType.ACCEPT);
            }
            consumer.commitSync(Duration.ofSeconds(30));
        }
        return got;
    }

    static Map<TopicPartition, SharePartitionOffsetInfo> offsets(Admin admin, String group) throws Exception {
        return admin.listShareGroupOffsets(Map.of(group, new ListShareGroupOffsetsSpec()))
                .partitionsToOffsetInfo(group).get(30, TimeUnit.SECONDS);
    }

    /** The start offset of `tp` once it is `expected`, or the last one seen after 30 s. */
    static long startOffsetBecomes(Admin admin, String group, TopicPartition tp, long expected) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        long started = System.nanoTime();
        while (true) {
            SharePartitionOffsetInfo info = offsets(admin, group).get(tp);
            long start = info == null ? -1 : info.startOffset();
            if (start == expected || System.nanoTime() > deadline) {
                System.out.println("share admin test: start offset " + start + " after "
                        + TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started) + " ms");
                return start;
            }
            Thread.sleep(200);
        }
    }

    static Throwable failure(org.apache.kafka.common.KafkaFuture<?> future) {
        ExecutionException e = assertThrows(ExecutionException.class, () -> future.get(30, TimeUnit.SECONDS));
        return e.getCause();
    }

    @Test
    void listAlterAndDeleteShareGroupOffsetsAndDeleteShareGroups() throws Exception {
        String bootstrap = Broker.bootstrap();
        String topic = Broker.uniqueTopic("share-admin");
        String group = "share-" + topic;
        TopicPartition tp = new TopicPartition(topic, 0);
        ShareGroupsTest.createTopic(bootstrap, topic);
        ShareGroupsTest.groupConfigs(bootstrap, group, Map.of("share.auto.offset.reset", "earliest"));
        try (KafkaProducer<String, String> producer = ShareGroupsTest.producer(bootstrap)) {
            for (int i = 0; i < 10; i++) {
                producer.send(new ProducerRecord<>(topic, Integer.toString(i), "v" + i));
            }
            producer.flush();
        }
        try (Admin admin = admin(bootstrap)) {
            KafkaShareConsumer<String, String> consumer =
                    new KafkaShareConsumer<>(ShareGroupsTest.consumerProps(bootstrap, group));
            try {
                consumer.subscribe(List.of(topic));
                assertEquals(10, acceptAll(consumer, 10).size());
                // Every record accepted: rill's share-partition starts after them at once;
                // Kafka 4.4 persists a moved start offset only with the next state write, so
                // its Admin still reports 0 (with all ten acknowledged).
                assertEquals(KAFKA ? 0L : 10L, offsets(admin, group).get(tp).startOffset());
                // A group with a member can be neither altered nor deleted.
                assertInstanceOf(GroupNotEmptyException.class,
                        failure(admin.alterShareGroupOffsets(group, Map.of(tp, 3L)).all()));
                assertInstanceOf(GroupNotEmptyException.class,
                        failure(admin.deleteShareGroupOffsets(group, Set.of(topic)).all()));
                assertInstanceOf(GroupNotEmptyException.class,
                        failure(admin.deleteShareGroups(List.of(group)).all()));
            } finally {
                consumer.close(Duration.ofSeconds(30));
            }
            // Once empty: alter the start back to 3; a partition that does not exist is refused.
            admin.alterShareGroupOffsets(group, Map.of(tp, 3L)).all().get(30, TimeUnit.SECONDS);
            assertEquals(3L, offsets(admin, group).get(tp).startOffset());
            assertInstanceOf(UnknownTopicOrPartitionException.class, failure(
                    admin.alterShareGroupOffsets(group, Map.of(new TopicPartition(topic, 5), 0L)).all()));
            // Consumption restarts at 3, each record delivered once more as a first delivery.
            try (KafkaShareConsumer<String, String> again =
                         new KafkaShareConsumer<>(ShareGroupsTest.consumerProps(bootstrap, group))) {
                again.subscribe(List.of(topic));
                Map<Integer, Short> got = acceptAll(again, 7);
                assertEquals(Set.of(3, 4, 5, 6, 7, 8, 9), got.keySet());
                got.values().forEach(count -> assertEquals((short) 1, count));
            }
            assertEquals(KAFKA ? 3L : 10L, offsets(admin, group).get(tp).startOffset());
            // Deleting the topic's offsets leaves the group without state for it.
            admin.deleteShareGroupOffsets(group, Set.of(topic)).all().get(30, TimeUnit.SECONDS);
            SharePartitionOffsetInfo left = offsets(admin, group).get(tp);
            assertTrue(left == null || left.startOffset() < 0, "no state after deleting offsets: " + left);
            // Deleting the group: gone from the listing; a second delete finds nothing.
            admin.alterShareGroupOffsets(group, Map.of(tp, 1L)).all().get(30, TimeUnit.SECONDS);
            admin.deleteShareGroups(List.of(group)).all().get(30, TimeUnit.SECONDS);
            for (GroupListing g : admin.listGroups().all().get(30, TimeUnit.SECONDS)) {
                assertNotEquals(group, g.groupId(), "deleted share group still listed");
            }
            assertInstanceOf(GroupIdNotFoundException.class,
                    failure(admin.deleteShareGroups(List.of(group)).all()));
            // Altering the offsets of a group that does not exist creates it, as a share group.
            String fresh = "fresh-" + topic;
            admin.alterShareGroupOffsets(fresh, Map.of(tp, 2L)).all().get(30, TimeUnit.SECONDS);
            assertEquals(2L, offsets(admin, fresh).get(tp).startOffset());
            admin.deleteShareGroups(List.of(fresh)).all().get(30, TimeUnit.SECONDS);
        }
    }
}
