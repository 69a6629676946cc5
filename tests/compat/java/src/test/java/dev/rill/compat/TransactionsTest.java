package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeProducersResult.PartitionProducerState;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.ListTransactionsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.admin.TransactionState;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TransactionalIdNotFoundException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Transactions with the Java client (kafka-clients 4.4.0): commits and aborts across 3
 * partitions read with read_committed and read_uncommitted; the last stable offset held by an
 * open transaction (consumers and Admin.listOffsets with both isolation levels); fencing by a
 * second producer with the same transactional.id; and the Admin calls that describe
 * transactions and producers (describeTransactions, listTransactions, describeProducers) on an
 * open and on a committed transaction.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class TransactionsTest {
    static final int PARTITIONS = 3;
    static final int TXN_TIMEOUT_MS = 60_000;

    static void createTopic(String topic, int partitions) throws Exception {
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get(30, TimeUnit.SECONDS);
            AdminTest.awaitTopic(admin, topic, true);
            AdminTest.awaitServing(admin, topic, partitions);
        }
    }

    static KafkaProducer<String, String> txnProducer(String txnId) {
        Properties p = Broker.props();
        p.put("transactional.id", txnId);
        p.put("transaction.timeout.ms", String.valueOf(TXN_TIMEOUT_MS));
        p.put("max.block.ms", "30000");
        p.put("linger.ms", "5");
        return new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
    }

    static KafkaConsumer<String, String> consumer(IsolationLevel level) {
        Properties p = Broker.props();
        p.put("isolation.level", level.toString());
        p.put("enable.auto.commit", "false");
        return new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
    }

    /**
     * Every record of one partition that `level` lets through, from offset 0 to the end offset
     * for that level (the last stable offset for read_committed). Bounded: 60 s.
     */
    static List<ConsumerRecord<String, String>> readAll(String topic, int partition, IsolationLevel level) {
        try (KafkaConsumer<String, String> c = consumer(level)) {
            TopicPartition tp = new TopicPartition(topic, partition);
            c.assign(List.of(tp));
            c.seek(tp, 0);
            long end = c.endOffsets(List.of(tp)).get(tp);
            List<ConsumerRecord<String, String>> out = new ArrayList<>();
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (c.position(tp) < end) {
                assertTrue(System.nanoTime() < deadline, () -> "reading " + tp + " " + level + ": stuck at "
                        + c.position(tp) + " of " + end + " after " + out.size() + " records");
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) out.add(r);
            }
            return out;
        }
    }

    static List<String> values(String topic, int partition, IsolationLevel level) {
        return readAll(topic, partition, level).stream().map(ConsumerRecord::value).toList();
    }

    /** A value that may need a moment to settle, read until it equals `want` (or 15 s). */
    interface Read<T> {
        T get() throws Exception;
    }

    /**
     * Reads again until `done` or 15 s have passed; returns the last read. A commit returns
     * once the coordinator has logged its decision and the markers follow (in Kafka too), so
     * the last stable offset, read_committed reads and the describe calls may lag a moment.
     */
    static <T> T settled(Read<T> read, java.util.function.Predicate<T> done) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
        while (true) {
            T got = read.get();
            if (done.test(got) || System.nanoTime() > deadline) return got;
            Thread.sleep(200);
        }
    }

    static List<String> valuesOnce(String topic, int partition, IsolationLevel level, List<String> want) throws Exception {
        return settled(() -> values(topic, partition, level), want::equals);
    }

    /** Sends `perPartition` records to each partition in the open transaction; returns them. */
    static Map<Integer, List<String>> sendTxn(KafkaProducer<String, String> p, String topic, String tag, int perPartition)
            throws Exception {
        Map<Integer, List<String>> sent = new HashMap<>();
        List<java.util.concurrent.Future<RecordMetadata>> acks = new ArrayList<>();
        for (int i = 0; i < perPartition; i++) {
            for (int part = 0; part < PARTITIONS; part++) {
                String v = String.format("%s-p%d-%03d", tag, part, i);
                acks.add(p.send(new ProducerRecord<>(topic, part, tag, v)));
                sent.computeIfAbsent(part, k -> new ArrayList<>()).add(v);
            }
        }
        p.flush();
        for (var a : acks) a.get(30, TimeUnit.SECONDS);
        return sent;
    }

    @Test
    void commitAndAbortSeenByReadCommittedAndReadUncommitted() throws Exception {
        String topic = Broker.uniqueTopic("txn");
        createTopic(topic, PARTITIONS);
        Map<Integer, List<String>> committed = new HashMap<>();
        Map<Integer, List<String>> all = new HashMap<>();
        int aborted = 0;
        try (KafkaProducer<String, String> p = txnProducer("java-txn-" + UUID.randomUUID())) {
            p.initTransactions();
            for (int t = 0; t < 12; t++) {
                boolean abort = t % 3 == 2;
                p.beginTransaction();
                // flushed and acknowledged before the end: aborted records really are in the log
                Map<Integer, List<String>> sent = sendTxn(p, topic, (abort ? "abort" : "commit") + t, 4 + t);
                if (abort) {
                    p.abortTransaction();
                    aborted++;
                } else {
                    p.commitTransaction();
                }
                for (var e : sent.entrySet()) {
                    all.computeIfAbsent(e.getKey(), k -> new ArrayList<>()).addAll(e.getValue());
                    if (!abort) committed.computeIfAbsent(e.getKey(), k -> new ArrayList<>()).addAll(e.getValue());
                }
            }
        }
        assertEquals(4, aborted);
        for (int part = 0; part < PARTITIONS; part++) {
            assertEquals(committed.get(part), valuesOnce(topic, part, IsolationLevel.READ_COMMITTED, committed.get(part)),
                    "read_committed, partition " + part);
            List<ConsumerRecord<String, String>> u = readAll(topic, part, IsolationLevel.READ_UNCOMMITTED);
            assertEquals(all.get(part), u.stream().map(ConsumerRecord::value).toList(),
                    "read_uncommitted, partition " + part);
            // one marker per transaction takes an offset: 11 before the last transaction's
            // records, the 12th after them
            assertEquals(all.get(part).size() + 10, u.get(u.size() - 1).offset(), "partition " + part + ": last data offset");
            try (Admin admin = Admin.create(Broker.props())) {
                TopicPartition tp = new TopicPartition(topic, part);
                long want = all.get(part).size() + 12;
                assertEquals(want, latestOnce(admin, tp, IsolationLevel.READ_UNCOMMITTED, want), "high watermark");
                assertEquals(want, latestOnce(admin, tp, IsolationLevel.READ_COMMITTED, want), "last stable offset");
            }
        }
    }

    @Test
    void openTransactionHoldsTheLastStableOffset() throws Exception {
        String topic = Broker.uniqueTopic("txn-lso");
        createTopic(topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        Properties plainProps = Broker.props();
        plainProps.put("enable.idempotence", "false");
        try (KafkaProducer<String, String> p = txnProducer("java-lso-" + UUID.randomUUID());
             KafkaProducer<String, String> plain = new KafkaProducer<>(plainProps, new StringSerializer(), new StringSerializer());
             Admin admin = Admin.create(Broker.props())) {
            p.initTransactions();
            p.beginTransaction();
            for (int i = 0; i < 3; i++) p.send(new ProducerRecord<>(topic, 0, null, "c1-" + i));
            p.commitTransaction();   // offsets 0..2, marker at 3
            p.beginTransaction();
            for (int i = 0; i < 4; i++) p.send(new ProducerRecord<>(topic, 0, null, "open-" + i)).get(30, TimeUnit.SECONDS);
            plain.send(new ProducerRecord<>(topic, 0, null, "plain-after")).get(30, TimeUnit.SECONDS);  // offset 8

            assertEquals(4, latestOnce(admin, tp, IsolationLevel.READ_COMMITTED, 4), "LSO = first offset of the open transaction");
            assertEquals(9, latest(admin, tp, IsolationLevel.READ_UNCOMMITTED), "high watermark");
            assertEquals(List.of("c1-0", "c1-1", "c1-2"), values(topic, 0, IsolationLevel.READ_COMMITTED));
            assertEquals(List.of("c1-0", "c1-1", "c1-2", "open-0", "open-1", "open-2", "open-3", "plain-after"),
                    values(topic, 0, IsolationLevel.READ_UNCOMMITTED));

            p.commitTransaction();   // marker at 9
            assertEquals(10, latestOnce(admin, tp, IsolationLevel.READ_COMMITTED, 10), "LSO after the commit");
            List<String> all = List.of("c1-0", "c1-1", "c1-2", "open-0", "open-1", "open-2", "open-3", "plain-after");
            assertEquals(all, valuesOnce(topic, 0, IsolationLevel.READ_COMMITTED, all));
        }
    }

    static long latest(Admin admin, TopicPartition tp, IsolationLevel level) throws Exception {
        return admin.listOffsets(Map.of(tp, OffsetSpec.latest()), new ListOffsetsOptions(level))
                .partitionResult(tp).get(30, TimeUnit.SECONDS).offset();
    }

    static long latestOnce(Admin admin, TopicPartition tp, IsolationLevel level, long want) throws Exception {
        return settled(() -> latest(admin, tp, level), got -> got == want);
    }

    static boolean causedBy(Throwable t, Class<? extends Throwable> cls) {
        for (Throwable c = t; c != null; c = c.getCause()) if (cls.isInstance(c)) return true;
        return false;
    }

    @Test
    void secondProducerWithSameTransactionalIdFencesTheFirst() throws Exception {
        String topic = Broker.uniqueTopic("txn-fence");
        createTopic(topic, PARTITIONS);
        String txnId = "java-fence-" + UUID.randomUUID();
        Map<Integer, List<String>> zombie;
        Map<Integer, List<String>> winner;
        try (KafkaProducer<String, String> p1 = txnProducer(txnId)) {
            p1.initTransactions();
            p1.beginTransaction();
            zombie = sendTxn(p1, topic, "zombie", 4);
            try (KafkaProducer<String, String> p2 = txnProducer(txnId)) {
                p2.initTransactions();   // bumps the epoch and aborts p1's open transaction
                p2.beginTransaction();
                winner = sendTxn(p2, topic, "winner", 3);
                p2.commitTransaction();
            }
            // Kafka 4.4 answers the fenced producer's next produce with INVALID_PRODUCER_EPOCH
            // (an abortable error, so commit fails with it too); PRODUCER_FENCED is the fatal
            // form. Either way the abort that follows is refused: the producer is fenced.
            Exception sendErr = assertThrows(Exception.class,
                    () -> p1.send(new ProducerRecord<>(topic, 0, null, "zombie-late")).get(30, TimeUnit.SECONDS));
            assertTrue(causedBy(sendErr, InvalidProducerEpochException.class) || causedBy(sendErr, ProducerFencedException.class),
                    () -> "send of a fenced producer: " + sendErr);
            Exception commitErr = assertThrows(Exception.class, p1::commitTransaction);
            assertTrue(causedBy(commitErr, InvalidProducerEpochException.class) || causedBy(commitErr, ProducerFencedException.class),
                    () -> "commit of a fenced producer: " + commitErr);
            Exception abortErr = assertThrows(Exception.class, p1::abortTransaction);
            assertTrue(causedBy(abortErr, ProducerFencedException.class), () -> "abort of a fenced producer: " + abortErr);
        }
        for (int part = 0; part < PARTITIONS; part++) {
            assertEquals(winner.get(part), valuesOnce(topic, part, IsolationLevel.READ_COMMITTED, winner.get(part)),
                    "partition " + part);
            List<String> u = values(topic, part, IsolationLevel.READ_UNCOMMITTED);
            assertEquals(zombie.get(part), u.subList(0, zombie.get(part).size()), "aborted zombie records in the log");
            assertFalse(u.contains("zombie-late"), "a fenced producer's record was stored");
        }
    }

    /**
     * Transactions v2 (KIP-890 part 2: partitions added implicitly by produce, the epoch bumped
     * at every commit or abort) is what the 4.x clients use when the broker finalizes the
     * feature transaction.version at level 2, as a new Kafka 4.x cluster does; at level 0 or
     * 1 they fall back to the older protocol.
     */
    @Test
    void brokerFinalizesTransactionVersion2() throws Exception {
        try (Admin admin = Admin.create(Broker.props())) {
            var features = admin.describeFeatures().featureMetadata().get(30, TimeUnit.SECONDS);
            var finalized = features.finalizedFeatures().get("transaction.version");
            assertNotNull(finalized, () -> "transaction.version not finalized: " + features);
            assertEquals(2, finalized.maxVersionLevel(), () -> "finalized: " + features.finalizedFeatures());
            var supported = features.supportedFeatures().get("transaction.version");
            assertNotNull(supported, () -> "transaction.version not supported: " + features);
            assertTrue(supported.maxVersion() >= 2, () -> "supported: " + features.supportedFeatures());
        }
    }

    @Test
    void adminDescribesOpenAndCommittedTransactions() throws Exception {
        String topic = Broker.uniqueTopic("txn-admin");
        createTopic(topic, PARTITIONS);
        String txnId = "java-admin-" + UUID.randomUUID();
        try (Admin admin = Admin.create(Broker.props());
             KafkaProducer<String, String> p = txnProducer(txnId)) {
            assertTrue(causedBy(assertThrows(ExecutionException.class,
                            () -> admin.describeTransactions(List.of(txnId)).description(txnId).get(30, TimeUnit.SECONDS)),
                    TransactionalIdNotFoundException.class), "unknown transactional id");

            p.initTransactions();
            p.beginTransaction();
            long before = System.currentTimeMillis();
            // partitions 0 (two records, two batches) and 2 only
            p.send(new ProducerRecord<>(topic, 0, null, "a")).get(30, TimeUnit.SECONDS);
            p.send(new ProducerRecord<>(topic, 0, null, "b")).get(30, TimeUnit.SECONDS);
            p.send(new ProducerRecord<>(topic, 2, null, "c")).get(30, TimeUnit.SECONDS);
            long after = System.currentTimeMillis();

            TransactionDescription open = admin.describeTransactions(List.of(txnId)).description(txnId).get(30, TimeUnit.SECONDS);
            assertEquals(TransactionState.ONGOING, open.state());
            assertTrue(open.producerId() >= 0, "producer id");
            assertTrue(open.producerEpoch() >= 0, "producer epoch");
            assertEquals(TXN_TIMEOUT_MS, open.transactionTimeoutMs());
            assertEquals(Set.of(new TopicPartition(topic, 0), new TopicPartition(topic, 2)), open.topicPartitions());
            assertTrue(open.transactionStartTimeMs().isPresent(), "start time of an open transaction");
            long start = open.transactionStartTimeMs().getAsLong();
            assertTrue(start >= before - 5_000 && start <= after + 5_000,
                    () -> "start time " + start + " not within [" + before + ", " + after + "] ± 5 s");
            assertTrue(open.coordinatorId() >= 0, "coordinator id");

            Collection<TransactionListing> listed = admin.listTransactions().all().get(30, TimeUnit.SECONDS);
            TransactionListing mine = listed.stream().filter(l -> l.transactionalId().equals(txnId)).findFirst()
                    .orElseThrow(() -> new AssertionError(txnId + " not in listTransactions: " + listed));
            assertEquals(open.producerId(), mine.producerId());
            assertEquals(TransactionState.ONGOING, mine.state());
            Collection<TransactionListing> ongoing = admin.listTransactions(
                    new ListTransactionsOptions().filterStates(List.of(TransactionState.ONGOING))).all().get(30, TimeUnit.SECONDS);
            assertTrue(ongoing.stream().anyMatch(l -> l.transactionalId().equals(txnId)), "filter by state ONGOING");
            assertTrue(ongoing.stream().allMatch(l -> l.state() == TransactionState.ONGOING), "filter by state: " + ongoing);
            Collection<TransactionListing> byPid = admin.listTransactions(
                    new ListTransactionsOptions().filterProducerIds(Set.of(open.producerId()))).all().get(30, TimeUnit.SECONDS);
            assertEquals(Set.of(txnId), new HashSet<>(byPid.stream().map(TransactionListing::transactionalId).toList()),
                    "filter by producer id");

            TopicPartition p0 = new TopicPartition(topic, 0);
            TopicPartition p1 = new TopicPartition(topic, 1);
            PartitionProducerState s0 = admin.describeProducers(List.of(p0)).partitionResult(p0).get(30, TimeUnit.SECONDS);
            assertEquals(1, s0.activeProducers().size(), () -> "producers of " + p0 + ": " + s0.activeProducers());
            ProducerState ps = s0.activeProducers().get(0);
            assertEquals(open.producerId(), ps.producerId());
            assertEquals(open.producerEpoch(), ps.producerEpoch());
            assertEquals(1, ps.lastSequence(), "two records sent, sequences 0 and 1");
            assertEquals(java.util.OptionalLong.of(0), ps.currentTransactionStartOffset(), "open transaction starts at 0");
            assertTrue(ps.lastTimestamp() >= before - 5_000, "last timestamp");
            assertTrue(admin.describeProducers(List.of(p1)).partitionResult(p1).get(30, TimeUnit.SECONDS)
                    .activeProducers().isEmpty(), "partition 1 was not written");

            p.commitTransaction();

            TransactionDescription done = settled(
                    () -> admin.describeTransactions(List.of(txnId)).description(txnId).get(30, TimeUnit.SECONDS),
                    d -> d.state() != TransactionState.PREPARE_COMMIT);
            assertEquals(TransactionState.COMPLETE_COMMIT, done.state());
            assertEquals(open.producerId(), done.producerId());
            assertTrue(done.producerEpoch() >= open.producerEpoch(), "epoch never goes back");
            assertTrue(done.topicPartitions().isEmpty(), () -> "partitions after the commit: " + done.topicPartitions());
            // Kafka keeps the last transaction's start time; loosely: if given, it is that one
            assertEquals(start, done.transactionStartTimeMs().orElse(start), "start time after the commit");
            Collection<TransactionListing> committedList = admin.listTransactions(
                    new ListTransactionsOptions().filterStates(List.of(TransactionState.COMPLETE_COMMIT))).all().get(30, TimeUnit.SECONDS);
            assertTrue(committedList.stream().anyMatch(l -> l.transactionalId().equals(txnId)), "listed as COMPLETE_COMMIT");

            ProducerState after0 = settled(
                    () -> admin.describeProducers(List.of(p0)).partitionResult(p0).get(30, TimeUnit.SECONDS).activeProducers().get(0),
                    s1 -> s1.currentTransactionStartOffset().isEmpty());
            assertEquals(open.producerId(), after0.producerId());
            assertEquals(java.util.OptionalLong.empty(), after0.currentTransactionStartOffset(), "transaction ended");
        }
    }
}
