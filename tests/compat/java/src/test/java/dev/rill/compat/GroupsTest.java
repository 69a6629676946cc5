package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.MemberToRemove;
import org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupOptions;
import org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupResult;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.UnknownMemberIdException;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Consumer groups with the Java client (classic protocol), each member its own JVM
 * ({@link GroupWorker}): three members split 6 partitions; one is SIGKILLed and its partitions
 * move to the other two after the session timeout (6000 ms, the broker minimum); a fourth joins
 * and gets a share. Every produced record is processed at least once, a moved partition resumes
 * from the committed offset, and at the end the committed offsets are the log end offsets.
 */
@Timeout(value = 240, unit = TimeUnit.SECONDS)
class GroupsTest {
    static final int PARTITIONS = 6;
    static final int SESSION_TIMEOUT_MS = 6000;

    /** One GroupWorker JVM and what it reported. */
    static final class Member {
        final String name;
        final Process proc;
        final Path stderr;
        final List<Event> events = new ArrayList<>();
        Set<Integer> owned = new TreeSet<>();
        final Thread reader;

        record Event(long tNanos, String kind, int partition, long offset, String value, Set<Integer> parts) {}

        Member(String bootstrap, String group, String topic, String name) throws IOException {
            this(bootstrap, group, topic, name, SESSION_TIMEOUT_MS, "");
        }

        Member(String bootstrap, String group, String topic, String name, int sessionTimeoutMs, String instanceId)
                throws IOException {
            this(bootstrap, group, topic, name, sessionTimeoutMs, instanceId, "classic");
        }

        Member(String bootstrap, String group, String topic, String name, int sessionTimeoutMs, String instanceId,
               String protocol) throws IOException {
            this.name = name;
            String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
            String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
            stderr = Files.createTempFile("group-worker-" + name + "-", ".log");
            proc = new ProcessBuilder(java, "-Xmx128m", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", cp,
                    GroupWorker.class.getName(), bootstrap, group, topic, name,
                    String.valueOf(sessionTimeoutMs), "180", instanceId, protocol)
                    .redirectError(stderr.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                    .start();
            reader = new Thread(this::read, "worker-" + name);
            reader.setDaemon(true);
            reader.start();
        }

        private static Set<Integer> parse(String csv) {
            Set<Integer> s = new TreeSet<>();
            if (!csv.equals("-")) for (String x : csv.split(",")) s.add(Integer.parseInt(x));
            return s;
        }

        private void read() {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(proc.getInputStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    long t = System.nanoTime();
                    String[] f = line.split(" ", 4);
                    synchronized (this) {
                        switch (f[0]) {
                            case "ASSIGN", "REVOKE", "LOST" -> {
                                owned = parse(f[3]);
                                events.add(new Event(t, f[0], -1, -1, null, parse(f[1])));
                            }
                            case "REC" -> events.add(new Event(t, "REC", Integer.parseInt(f[1]), Long.parseLong(f[2]), f[3], null));
                            case "COMMIT" -> {
                                for (String kv : f[1].split(",")) {
                                    String[] pv = kv.split("=");
                                    events.add(new Event(t, "COMMIT", Integer.parseInt(pv[0]), Long.parseLong(pv[1]), null, null));
                                }
                            }
                            default -> events.add(new Event(t, f[0], -1, -1, line, null));
                        }
                    }
                }
            } catch (IOException ignored) {
            }
        }

        synchronized Set<Integer> owned() {
            return new TreeSet<>(owned);
        }

        synchronized List<Event> events() {
            return new ArrayList<>(events);
        }

        void kill() throws InterruptedException {
            proc.destroyForcibly();  // SIGKILL
            proc.waitFor(10, TimeUnit.SECONDS);
        }

        void stop() throws InterruptedException {
            proc.destroy();  // SIGTERM: the worker closes its consumer (LeaveGroup)
            if (!proc.waitFor(20, TimeUnit.SECONDS)) kill();
            try {  // failure messages quote it before this point
                Files.deleteIfExists(stderr);
            } catch (IOException ignored) {
            }
        }

        String describe() {
            String err;
            try {
                err = Files.readString(stderr);
                if (err.length() > 800) err = err.substring(err.length() - 800);
            } catch (IOException e) {
                err = "";
            }
            List<String> kinds = events().stream().map(Event::kind)
                    .filter(k -> !k.equals("REC") && !k.equals("COMMIT")).toList();
            return name + ": alive=" + proc.isAlive() + " owned=" + owned() + " events="
                    + kinds.subList(Math.max(0, kinds.size() - 12), kinds.size()) + " stderr=" + err;
        }
    }

    static void waitUntil(BooleanSupplier cond, long timeoutS, String what, List<Member> ms) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        while (System.nanoTime() < deadline) {
            if (cond.getAsBoolean()) return;
            Thread.sleep(100);
        }
        fail("timed out after " + timeoutS + " s waiting for " + what + "\n"
                + ms.stream().map(Member::describe).collect(Collectors.joining("\n")));
    }

    /** Waits for a split: each member owns exactly `each` partitions, disjoint, covering all,
     *  holding for a second (no rebalance in flight). */
    static List<Set<Integer>> waitSplit(List<Member> ms, int each, long timeoutS) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        long since = 0;
        while (System.nanoTime() < deadline) {
            for (Member m : ms) {
                if (!m.proc.isAlive()) fail("worker " + m.name + " exited\n" + m.describe());
            }
            List<Set<Integer>> owned = ms.stream().map(Member::owned).toList();
            Set<Integer> union = new HashSet<>();
            int total = 0;
            boolean ok = true;
            for (Set<Integer> o : owned) {
                ok &= o.size() == each;
                total += o.size();
                union.addAll(o);
            }
            ok &= total == union.size() && union.size() == PARTITIONS;
            if (ok) {
                if (since == 0) since = System.nanoTime();
                if (System.nanoTime() - since >= TimeUnit.SECONDS.toNanos(1)) return owned;
            } else {
                since = 0;
            }
            Thread.sleep(100);
        }
        fail("no stable split of " + PARTITIONS + " partitions, " + each + " each, in " + timeoutS + " s\n"
                + ms.stream().map(Member::describe).collect(Collectors.joining("\n")));
        return null;
    }

    /** (partition, offset) → value over all members. */
    static Map<List<Long>, String> processed(List<Member> ms) {
        Map<List<Long>, String> out = new HashMap<>();
        for (Member m : ms) {
            for (Member.Event e : m.events()) {
                if (e.kind().equals("REC")) out.put(List.of((long) e.partition(), e.offset()), e.value());
            }
        }
        return out;
    }

    static void waitProcessed(List<Member> ms, Map<List<Long>, String> produced) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        Map<List<Long>, String> got = processed(ms);
        while (!got.keySet().containsAll(produced.keySet()) && System.nanoTime() < deadline) {
            Thread.sleep(100);
            got = processed(ms);
        }
        final Map<List<Long>, String> g = got;
        List<List<Long>> missing = produced.keySet().stream().filter(k -> !g.containsKey(k)).sorted(
                (a, b) -> a.get(0).equals(b.get(0)) ? Long.compare(a.get(1), b.get(1)) : Long.compare(a.get(0), b.get(0))).toList();
        assertTrue(missing.isEmpty(), missing.size() + " of " + produced.size() + " produced records never processed, first "
                + missing.subList(0, Math.min(10, missing.size())) + "\n"
                + ms.stream().map(Member::describe).collect(Collectors.joining("\n")));
        for (var e : produced.entrySet()) assertEquals(e.getValue(), got.get(e.getKey()), "value at " + e.getKey());
    }

    static Map<List<Long>, String> produce(String topic, String tag, int n) throws Exception {
        Map<List<Long>, String> out = new HashMap<>();
        try (KafkaProducer<byte[], byte[]> p = ProduceConsumeTest.producer("all", "none")) {
            List<java.util.concurrent.Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                fs.add(p.send(new ProducerRecord<>(topic, i % PARTITIONS, null,
                        (tag + "-" + i).getBytes(StandardCharsets.UTF_8))));
            }
            for (int i = 0; i < n; i++) {
                RecordMetadata md = fs.get(i).get(60, TimeUnit.SECONDS);
                out.put(List.of((long) md.partition(), md.offset()), tag + "-" + i);
            }
        }
        return out;
    }

    static Map<Integer, Long> committed(Admin admin, String group) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> m = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
        Map<Integer, Long> out = new HashMap<>();
        m.forEach((tp, om) -> out.put(tp.partition(), om == null ? -1 : om.offset()));
        return out;
    }

    @Test
    void threeMembersSplitKillRebalanceJoin() throws Exception {
        splitKillRebalanceJoin("classic", SESSION_TIMEOUT_MS);
    }

    /** The same with KIP-848 members (group.protocol=consumer): the broker assigns, and a
     *  partition moves once its previous owner revoked it or was fenced. rill's test broker runs
     *  with group.consumer.session.timeout.ms 6000 ({@link Broker}); Kafka's default is 45 s. */
    @Test
    void threeMembersSplitKillRebalanceJoinKip848() throws Exception {
        boolean external = System.getenv("KAFKA_BOOTSTRAP") != null && !System.getenv("KAFKA_BOOTSTRAP").isEmpty();
        splitKillRebalanceJoin("consumer", external ? 45_000 : Broker.CONSUMER_SESSION_TIMEOUT_MS);
    }

    private void splitKillRebalanceJoin(String protocol, int sessionTimeoutMs) throws Exception {
        String topic = ProduceConsumeTest.createTopic("groups", PARTITIONS);
        String group = "g-" + topic;
        String bs = Broker.bootstrap();
        Map<List<Long>, String> produced = new HashMap<>(produce(topic, "a", 600));
        List<Member> ms = new ArrayList<>();
        try {
            for (int i = 0; i < 3; i++) ms.add(new Member(bs, group, topic, "j" + i, SESSION_TIMEOUT_MS, "", protocol));
            waitSplit(ms, 2, 60);
            waitProcessed(ms, produced);
            Member victim = ms.get(0);
            List<Member> survivors = List.of(ms.get(1), ms.get(2));
            Set<Integer> victimParts = victim.owned();
            Thread.sleep(500);  // its last commit is out; then crash it
            victim.kill();
            long tKill = System.nanoTime();
            Map<Integer, Long> committedBefore = new HashMap<>(), processedMax = new HashMap<>();
            for (Member m : ms) {
                for (Member.Event e : m.events()) {
                    if (e.kind().equals("COMMIT")) committedBefore.merge(e.partition(), e.offset(), Math::max);
                    if (e.kind().equals("REC")) processedMax.merge(e.partition(), e.offset(), Math::max);
                }
            }
            produced.putAll(produce(topic, "b", 300));

            waitSplit(survivors, 3, sessionTimeoutMs / 1000 + 45);
            long movedNanos = Long.MAX_VALUE;
            for (Member m : survivors) {
                for (Member.Event e : m.events()) {
                    if (e.kind().equals("ASSIGN") && e.tNanos() > tKill && !java.util.Collections.disjoint(e.parts(), victimParts)) {
                        movedNanos = Math.min(movedNanos, e.tNanos() - tKill);
                    }
                }
            }
            System.out.printf("victim's partitions %s reassigned %.1f s after SIGKILL%n", victimParts, movedNanos / 1e9);
            // the session timeout, plus a rejoin round: heartbeat interval, JoinGroup, SyncGroup
            assertTrue(movedNanos < TimeUnit.MILLISECONDS.toNanos(sessionTimeoutMs + 10_000),
                    "partitions moved " + movedNanos / 1e9 + " s after the kill");
            waitProcessed(ms, produced);
            for (int p : victimParts) {
                long first = Long.MAX_VALUE;
                for (Member m : survivors) {
                    for (Member.Event e : m.events()) {
                        if (e.kind().equals("REC") && e.partition() == p && e.tNanos() > tKill) first = Math.min(first, e.offset());
                    }
                }
                long c = committedBefore.getOrDefault(p, 0L), pm = processedMax.getOrDefault(p, -1L);
                assertTrue(c <= first && first <= pm + 1,
                        "partition " + p + ": resumed at " + first + ", committed " + c + ", processed up to " + pm);
            }

            Member joiner = new Member(bs, group, topic, "j3", SESSION_TIMEOUT_MS, "", protocol);
            ms.add(joiner);
            waitSplit(List.of(ms.get(1), ms.get(2), joiner), 2, 45);
            produced.putAll(produce(topic, "c", 300));
            waitProcessed(ms, produced);
            Set<Integer> joinerGotC = joiner.events().stream()
                    .filter(e -> e.kind().equals("REC") && e.value().startsWith("c-"))
                    .map(Member.Event::partition).collect(Collectors.toCollection(TreeSet::new));
            assertEquals(joiner.owned(), joinerGotC);
        } finally {
            for (Member m : ms) m.stop();
        }
        for (Member m : ms) {
            List<String> errs = m.events().stream().filter(e -> e.kind().equals("COMMIT_ERROR")).map(Member.Event::value).toList();
            System.out.println(m.name + " commit errors (retried by redelivery): " + errs.size());
        }
        Map<Integer, Long> want = new HashMap<>();
        for (List<Long> k : produced.keySet()) want.merge(k.get(0).intValue(), k.get(1) + 1, Math::max);
        try (Admin admin = Admin.create(Broker.props())) {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            Map<Integer, Long> got = committed(admin, group);
            while (!got.equals(want) && System.nanoTime() < deadline) {
                Thread.sleep(200);
                got = committed(admin, group);
            }
            assertEquals(want, got, "committed offsets at the end");
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups()
                    .get(group).get(30, TimeUnit.SECONDS);
            assertEquals(GroupState.EMPTY, d.groupState());
            assertEquals(List.<MemberDescription>of(), List.copyOf(d.members()));
        }
    }

    /** Admin over a live group and an empty one: listGroups, describeConsumerGroups (members
     *  and their assignments as the Java client decodes them), listConsumerGroupOffsets;
     *  alterConsumerGroupOffsets refused while members remain (UNKNOWN_MEMBER_ID) and
     *  deleteConsumerGroups refused (NON_EMPTY_GROUP); once empty: alter, deleteConsumerGroupOffsets,
     *  deleteConsumerGroups, and describe/delete of the deleted group. */
    @Test
    void adminOnLiveAndEmptyGroup() throws Exception {
        String topic = ProduceConsumeTest.createTopic("groupadm", PARTITIONS);
        String group = "g-" + topic;
        String bs = Broker.bootstrap();
        Map<List<Long>, String> produced = produce(topic, "a", 120);
        List<Member> ms = new ArrayList<>();
        try (Admin admin = Admin.create(Broker.props())) {
            try {
                ms.add(new Member(bs, group, topic, "adm0"));
                ms.add(new Member(bs, group, topic, "adm1"));
                waitSplit(ms, 3, 60);
                waitProcessed(ms, produced);
                Map<Integer, Long> all20 = new HashMap<>();
                for (int p = 0; p < PARTITIONS; p++) all20.put(p, 20L);
                waitUntil(() -> {
                    try {
                        return committed(admin, group).equals(all20);
                    } catch (Exception e) {
                        return false;
                    }
                }, 30, "committed offsets 20 everywhere", ms);

                List<String> listed = admin.listGroups().all().get(30, TimeUnit.SECONDS).stream()
                        .map(GroupListing::groupId).toList();
                assertTrue(listed.contains(group), "listGroups: " + listed);
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups()
                        .get(group).get(30, TimeUnit.SECONDS);
                assertEquals(GroupState.STABLE, d.groupState());
                assertEquals("range", d.partitionAssignor());
                assertFalse(d.isSimpleConsumerGroup());
                Map<String, Set<Integer>> byClient = new HashMap<>();
                for (MemberDescription m : d.members()) {
                    byClient.put(m.clientId(), m.assignment().topicPartitions().stream()
                            .map(TopicPartition::partition).collect(Collectors.toCollection(TreeSet::new)));
                }
                for (Member m : ms) assertEquals(m.owned(), byClient.get(m.name), "assignment of " + m.name);

                ExecutionException alter = assertThrows(ExecutionException.class, () -> admin.alterConsumerGroupOffsets(
                        group, Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(5))).all().get(30, TimeUnit.SECONDS));
                assertInstanceOf(UnknownMemberIdException.class, alter.getCause());
                ExecutionException del = assertThrows(ExecutionException.class,
                        () -> admin.deleteConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS));
                assertInstanceOf(GroupNotEmptyException.class, del.getCause());
            } finally {
                for (Member m : ms) m.stop();
            }
            waitUntil(() -> {
                try {
                    return admin.describeConsumerGroups(List.of(group)).describedGroups().get(group)
                            .get(30, TimeUnit.SECONDS).groupState() == GroupState.EMPTY;
                } catch (Exception e) {
                    return false;
                }
            }, 30, "group empty", ms);
            admin.alterConsumerGroupOffsets(group, Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(5, "five")))
                    .all().get(30, TimeUnit.SECONDS);
            Map<TopicPartition, OffsetAndMetadata> offs = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            assertEquals(5, offs.get(new TopicPartition(topic, 0)).offset());
            assertEquals("five", offs.get(new TopicPartition(topic, 0)).metadata());
            assertEquals(20, offs.get(new TopicPartition(topic, 1)).offset());
            admin.deleteConsumerGroupOffsets(group, Set.of(new TopicPartition(topic, 1))).all().get(30, TimeUnit.SECONDS);
            offs = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            assertFalse(offs.containsKey(new TopicPartition(topic, 1)) && offs.get(new TopicPartition(topic, 1)) != null,
                    "partition 1 still committed: " + offs);
            assertEquals(PARTITIONS - 1, offs.values().stream().filter(o -> o != null).count(), offs.toString());
            admin.deleteConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS);
            ExecutionException gone = assertThrows(ExecutionException.class,
                    () -> admin.deleteConsumerGroups(List.of(group)).all().get(30, TimeUnit.SECONDS));
            assertInstanceOf(GroupIdNotFoundException.class, gone.getCause());
            List<String> listed = admin.listGroups().all().get(30, TimeUnit.SECONDS).stream()
                    .map(GroupListing::groupId).toList();
            assertFalse(listed.contains(group), "listGroups after delete: " + listed);
        }
    }

    /** Static membership with the Java client: the group leader (a static member) is SIGKILLed
     *  and restarted with the same group.instance.id within its session timeout. It gets its
     *  partitions back (Kafka answers the rejoining static leader without a new assignment
     *  round, KIP-814) and the other member sees no revoke or assign. */
    @Test
    void staticLeaderRestartWithoutRebalance() throws Exception {
        String topic = ProduceConsumeTest.createTopic("groupstatic", PARTITIONS);
        String group = "g-" + topic;
        String bs = Broker.bootstrap();
        int sessionMs = 10_000;
        List<Member> ms = new ArrayList<>();
        try {
            Member leader = new Member(bs, group, topic, "st-leader", sessionMs, "st-leader");
            ms.add(leader);
            waitSplit(List.of(leader), PARTITIONS, 60);  // alone first: it is the leader
            Member other = new Member(bs, group, topic, "st-other", sessionMs, "st-other");
            ms.add(other);
            List<Set<Integer>> split = waitSplit(List.of(leader, other), 3, 60);
            Map<List<Long>, String> produced = produce(topic, "a", 60);
            waitProcessed(ms, produced);
            int seen = other.events().size();
            leader.kill();
            long tKill = System.nanoTime();
            Member again = new Member(bs, group, topic, "st-leader2", sessionMs, "st-leader");
            ms.add(again);
            waitUntil(() -> again.owned().equals(split.get(0)), 30, "the restarted leader to get " + split.get(0) + " back", ms);
            long backMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - tKill);
            assertTrue(backMs < sessionMs, "partitions back after " + backMs + " ms");
            Thread.sleep(3000);  // a rebalance would have reached the other member by now
            List<String> churn = other.events().subList(seen, other.events().size()).stream()
                    .map(Member.Event::kind).filter(k -> !k.equals("REC") && !k.equals("COMMIT")).toList();
            assertEquals(List.of(), churn, "the other member saw a rebalance during the restart");
            assertEquals(split.get(1), other.owned());
            Map<List<Long>, String> more = produce(topic, "b", 60);
            waitProcessed(List.of(again, other), more);
        } finally {
            for (Member m : ms) m.stop();
        }
    }

    /** A static member that closes sends no LeaveGroup, so the group waits for its session
     *  timeout (30 s here). Admin.removeMembersFromConsumerGroup (LeaveGroup v3+ by
     *  group.instance.id) removes it at once: the other member gets every partition long before
     *  the session timeout; removing an unknown instance id fails with UNKNOWN_MEMBER_ID. */
    @Test
    void adminRemovesStaticMember() throws Exception {
        String topic = ProduceConsumeTest.createTopic("groupremove", PARTITIONS);
        String group = "g-" + topic;
        String bs = Broker.bootstrap();
        int sessionMs = 30_000;
        List<Member> ms = new ArrayList<>();
        try (Admin admin = Admin.create(Broker.props())) {
            Member stays = new Member(bs, group, topic, "rm-stays", sessionMs, "rm-stays");
            ms.add(stays);
            waitSplit(List.of(stays), PARTITIONS, 60);
            Member goes = new Member(bs, group, topic, "rm-goes", sessionMs, "rm-goes");
            ms.add(goes);
            waitSplit(List.of(stays, goes), 3, 60);
            int seen = stays.events().size();
            goes.stop();  // clean close; a static member does not leave the group on close
            Thread.sleep(3000);
            assertEquals(3, stays.owned().size(), "the group rebalanced before the static member was removed");
            assertEquals(seen, stays.events().size(), "the remaining member saw a rebalance on a static close");
            long t0 = System.nanoTime();
            RemoveMembersFromConsumerGroupResult res = admin.removeMembersFromConsumerGroup(group,
                    new RemoveMembersFromConsumerGroupOptions(List.of(new MemberToRemove("rm-goes"))));
            res.all().get(30, TimeUnit.SECONDS);
            waitUntil(() -> stays.owned().size() == PARTITIONS, 20, "the remaining member to get every partition", ms);
            long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - t0);
            assertTrue(tookMs < sessionMs, "rebalanced " + tookMs + " ms after the removal");
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups()
                    .get(group).get(30, TimeUnit.SECONDS);
            assertEquals(List.of("rm-stays"), d.members().stream().map(MemberDescription::clientId).toList());
            assertEquals(java.util.Optional.of("rm-stays"), d.members().iterator().next().groupInstanceId());

            MemberToRemove nobody = new MemberToRemove("rm-nobody");
            RemoveMembersFromConsumerGroupResult bad = admin.removeMembersFromConsumerGroup(group,
                    new RemoveMembersFromConsumerGroupOptions(List.of(nobody)));
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> bad.memberResult(nobody).get(30, TimeUnit.SECONDS));
            assertInstanceOf(UnknownMemberIdException.class, e.getCause());
        } finally {
            for (Member m : ms) m.stop();
        }
    }
}
