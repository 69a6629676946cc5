package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import dev.rill.compat.GroupsTest.Member;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * A mixed group, as Kafka 4's online migration (KIP-848): three classic consumers on 6
 * partitions are rolled one by one to {@code group.protocol=consumer} while a producer runs
 * (the first KIP-848 member converts the group to a consumer group; the classic members left
 * keep JoinGroup/SyncGroup inside it), then rolled back one by one (the last KIP-848 member
 * leaving converts it back to classic). Every produced record is processed at least once,
 * none skipped, and no partition is ever owned by two members at once, as the members'
 * assignment callbacks report. Each member is its own JVM ({@link GroupWorker}); a member is
 * rolled by SIGKILL once everything produced so far is reported processed (see
 * {@link #killQuiet}); the producer runs on through the rebalance that follows. With
 * KAFKA_BOOTSTRAP set the same test runs against Apache Kafka.
 */
@Timeout(value = 420, unit = TimeUnit.SECONDS)
class MixedGroupsTest {
    static final int PARTITIONS = GroupsTest.PARTITIONS;
    /** A bound on the background producer (records), whatever the test's pace. */
    static final int PRODUCE_MAX = 40_000;

    /** Sends one record per partition every 50 ms until stopped; remembers what it wrote. */
    static final class Producer implements AutoCloseable {
        final Map<List<Long>, String> produced = new ConcurrentHashMap<>();
        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicBoolean paused = new AtomicBoolean();
        final AtomicBoolean idle = new AtomicBoolean();
        final Thread thread;
        volatile Throwable failure;

        Producer(String topic) {
            thread = new Thread(() -> {
                try (KafkaProducer<byte[], byte[]> p = ProduceConsumeTest.producer("all", "none")) {
                    int i = 0;
                    while (!stop.get() && i < PRODUCE_MAX) {
                        if (paused.get()) {
                            idle.set(true);
                            Thread.sleep(10);
                            continue;
                        }
                        List<Future<RecordMetadata>> fs = new ArrayList<>();
                        List<String> values = new ArrayList<>();
                        for (int k = 0; k < PARTITIONS; k++, i++) {
                            String v = "m-" + i;
                            values.add(v);
                            fs.add(p.send(new ProducerRecord<>(topic, k, null, v.getBytes(StandardCharsets.UTF_8))));
                        }
                        for (int k = 0; k < fs.size(); k++) {
                            RecordMetadata md = fs.get(k).get(60, TimeUnit.SECONDS);
                            produced.put(List.of((long) md.partition(), md.offset()), values.get(k));
                        }
                        Thread.sleep(50);
                    }
                } catch (Throwable t) {
                    failure = t;
                }
            }, "mixed-producer");
            thread.setDaemon(true);
            thread.start();
        }

        /** Stops producing once the batch in flight is acknowledged (bounded wait). */
        void pause() throws InterruptedException {
            paused.set(true);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(70);
            while (!idle.get() && thread.isAlive() && System.nanoTime() < deadline) Thread.sleep(10);
        }

        void resume() {
            idle.set(false);
            paused.set(false);
        }

        @Override
        public void close() throws InterruptedException {
            stop.set(true);
            thread.join(70_000);
        }
    }

    /** Replays every member's ASSIGN / REVOKE / LOST callbacks in time order and fails if a
     *  partition was ever owned by two members at once. A killed member owns nothing from the
     *  moment it was killed (`stopped`). */
    static void assertNeverOwnedTwice(List<Member> ms, Map<String, Long> stopped) {
        record Change(long t, String member, String kind, Set<Integer> parts) {}
        List<Change> changes = new ArrayList<>();
        for (Member m : ms) {
            for (Member.Event e : m.events()) {
                switch (e.kind()) {
                    case "ASSIGN", "REVOKE", "LOST" -> changes.add(new Change(e.tNanos(), m.name, e.kind(), e.parts()));
                    default -> {}
                }
            }
        }
        for (var e : stopped.entrySet()) {
            changes.add(new Change(e.getValue(), e.getKey(), "STOPPED", Set.copyOf(java.util.stream.IntStream
                    .range(0, PARTITIONS).boxed().toList())));
        }
        changes.sort(Comparator.comparingLong(Change::t));
        Map<Integer, String> owner = new TreeMap<>();
        for (Change c : changes) {
            for (int p : c.parts()) {
                if (c.kind().equals("ASSIGN")) {
                    String held = owner.putIfAbsent(p, c.member());
                    assertTrue(held == null || held.equals(c.member()),
                            "partition " + p + " assigned to " + c.member() + " while " + held + " owned it");
                } else {
                    owner.remove(p, c.member());
                }
            }
        }
    }

    /** For a failure message: around the first record never processed, who processed and
     *  committed what on its partition, and the members' rebalance events, in time order. */
    static String history(List<Member> ms, Map<List<Long>, String> produced) {
        Map<List<Long>, String> got = GroupsTest.processed(ms);
        List<Long> first = produced.keySet().stream().filter(k -> !got.containsKey(k))
                .min(Comparator.comparing((List<Long> k) -> k.get(0)).thenComparing(k -> k.get(1))).orElse(null);
        if (first == null) return "";
        int p = first.get(0).intValue();
        long o = first.get(1);
        record Line(long t, String text) {}
        List<Line> lines = new ArrayList<>();
        for (Member m : ms) {
            for (Member.Event e : m.events()) {
                boolean near = e.partition() == p && Math.abs(e.offset() - o) <= 30;
                switch (e.kind()) {
                    case "REC" -> { if (near) lines.add(new Line(e.tNanos(), m.name + " REC " + e.offset())); }
                    case "COMMIT" -> { if (near) lines.add(new Line(e.tNanos(), m.name + " COMMIT " + e.offset())); }
                    case "ASSIGN", "REVOKE", "LOST" -> lines.add(new Line(e.tNanos(), m.name + " " + e.kind() + " " + e.parts()));
                    default -> lines.add(new Line(e.tNanos(), m.name + " " + e.kind() + " " + e.value()));
                }
            }
        }
        lines.sort(Comparator.comparingLong(Line::t));
        long t0 = lines.isEmpty() ? 0 : lines.get(0).t();
        StringBuilder out = new StringBuilder("history of partition " + p + " near offset " + o + ":\n");
        for (Line l : lines) out.append(String.format("%8.3f %s%n", (l.t() - t0) / 1e9, l.text()));
        return out.toString();
    }

    static GroupListing listing(Admin admin, String group) throws Exception {
        for (GroupListing g : admin.listGroups().all().get(30, TimeUnit.SECONDS)) {
            if (g.groupId().equals(group)) return g;
        }
        return null;
    }

    /** Waits until ListGroups shows `group` with `type`. */
    static void waitType(Admin admin, String group, GroupType type, List<Member> ms, long timeoutS) throws Exception {
        GroupsTest.waitUntil(() -> {
            try {
                GroupListing g = listing(admin, group);
                return g != null && g.type().orElse(null) == type;
            } catch (Exception e) {
                return false;
            }
        }, timeoutS, "group " + group + " of type " + type, ms);
    }

    /** Kills the oldest live member once everything produced so far is reported processed
     *  (the producer paused meanwhile, and resumed at once after: the rebalance runs under
     *  load). A killed worker's last report lines can be lost while its commit landed, which
     *  would look like a skipped record (seen against Kafka 4.4 as well); with nothing left to
     *  process at the kill, what it loses can only be a duplicate. */
    static void killQuiet(Producer producer, List<Member> all, List<Member> live, Map<String, Long> stopped)
            throws InterruptedException {
        producer.pause();
        GroupsTest.waitProcessed(all, new HashMap<>(producer.produced));
        stopped.put(live.get(0).name, System.nanoTime());
        live.get(0).kill();
        live.remove(0);
        producer.resume();
    }

    @Test
    void rollingUpgradeToConsumerProtocolAndBack() throws Exception {
        String topic = ProduceConsumeTest.createTopic("mixed", PARTITIONS);
        String group = "g-" + topic;
        String bs = Broker.bootstrap();
        boolean external = System.getenv("KAFKA_BOOTSTRAP") != null && !System.getenv("KAFKA_BOOTSTRAP").isEmpty();
        // A killed member's partitions move after its session timeout (KIP-848 on Kafka: 45 s).
        long splitTimeoutS = external ? 120 : 60;
        List<Member> all = new ArrayList<>();
        List<Member> live = new ArrayList<>();
        Map<String, Long> stopped = new ConcurrentHashMap<>();
        try (Admin admin = Admin.create(Broker.props()); Producer producer = new Producer(topic)) {
            for (int i = 0; i < 3; i++) {
                Member m = new Member(bs, group, topic, "classic" + i, GroupsTest.SESSION_TIMEOUT_MS, "", "classic");
                all.add(m);
                live.add(m);
            }
            GroupsTest.waitSplit(live, 2, splitTimeoutS);
            waitType(admin, group, GroupType.CLASSIC, live, splitTimeoutS);

            // Upgrade, one member at a time.
            for (int i = 0; i < 3; i++) {
                killQuiet(producer, all, live, stopped);
                Member m = new Member(bs, group, topic, "consumer" + i, GroupsTest.SESSION_TIMEOUT_MS, "", "consumer");
                all.add(m);
                live.add(m);
                GroupsTest.waitSplit(live, 2, splitTimeoutS);
                waitType(admin, group, GroupType.CONSUMER, live, splitTimeoutS);
                if (i == 0) {
                    ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups()
                            .get(group).get(30, TimeUnit.SECONDS);
                    assertEquals(GroupType.CONSUMER, d.type());
                    assertEquals(3, d.members().size(), d.toString());
                }
                System.out.printf("rolled %d of 3 to group.protocol=consumer%n", i + 1);
            }

            // Downgrade, one member at a time: the group stays a consumer group until its last
            // KIP-848 member leaves.
            for (int i = 0; i < 3; i++) {
                killQuiet(producer, all, live, stopped);
                if (i < 2) {
                    Member m = new Member(bs, group, topic, "back" + i, GroupsTest.SESSION_TIMEOUT_MS, "", "classic");
                    all.add(m);
                    live.add(m);
                    GroupsTest.waitSplit(live, 2, splitTimeoutS);
                    waitType(admin, group, GroupType.CONSUMER, live, splitTimeoutS);
                } else {
                    waitType(admin, group, GroupType.CLASSIC, live, splitTimeoutS);
                    GroupsTest.waitSplit(live, 3, splitTimeoutS);
                    Member m = new Member(bs, group, topic, "back" + i, GroupsTest.SESSION_TIMEOUT_MS, "", "classic");
                    all.add(m);
                    live.add(m);
                    GroupsTest.waitSplit(live, 2, splitTimeoutS);
                    waitType(admin, group, GroupType.CLASSIC, live, splitTimeoutS);
                }
                System.out.printf("rolled %d of 3 back to group.protocol=classic%n", i + 1);
            }
            producer.close();
            assertNull(producer.failure, () -> "producer failed: " + producer.failure);
            System.out.printf("produced %d records during the rolls%n", producer.produced.size());
            try {
                GroupsTest.waitProcessed(all, new HashMap<>(producer.produced));
            } catch (AssertionError e) {
                throw new AssertionError(e.getMessage() + "\n" + history(all, producer.produced), e);
            }
        } finally {
            for (Member m : live) {
                stopped.put(m.name, System.nanoTime());  // what it prints while closing may be lost
                m.stop();
            }
        }
        assertNeverOwnedTwice(all, stopped);
        for (Member m : all) java.nio.file.Files.deleteIfExists(m.stderr);  // killed ones keep theirs
        Set<String> errors = new TreeSet<>();
        for (Member m : all) {
            for (Member.Event e : m.events()) {
                if (e.kind().equals("COMMIT_ERROR")) errors.add(m.name + ": " + e.value());
            }
        }
        System.out.println("commit errors (retried by redelivery): " + errors.size());
    }
}
