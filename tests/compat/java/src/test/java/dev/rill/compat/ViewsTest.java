package dev.rill.compat;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.header.Header;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * Filtered views (a Rill feature, not Kafka's): a Java consumer of a view sees exactly the
 * records a reference evaluator in this test selects from the source, in source order, and
 * never a record of an aborted transaction.
 */
@Timeout(value = 180, unit = TimeUnit.SECONDS)
class ViewsTest {
    static final String FILTER = "(region = 'eu' AND amount > 100) OR vip IS NOT NULL";
    static final int PARTITIONS = 3;

    /** One source record's filterable fields. */
    record Order(String region, int amount, boolean vip, String value) {
        /** The reference evaluator of FILTER (a missing header never matches). */
        boolean selected() {
            return ("eu".equals(region) && amount > 100) || vip;
        }

        ProducerRecord<String, String> toRecord(String topic, int partition) {
            ProducerRecord<String, String> r = new ProducerRecord<>(topic, partition, "k-" + value, value);
            if (region != null) r.headers().add("region", region.getBytes(StandardCharsets.UTF_8));
            r.headers().add("amount", Integer.toString(amount).getBytes(StandardCharsets.UTF_8));
            if (vip) r.headers().add("vip", "yes".getBytes(StandardCharsets.UTF_8));
            return r;
        }
    }

    static Order randomOrder(Random rng, String value) {
        String[] regions = {"eu", "us", null, "cn"};
        return new Order(regions[rng.nextInt(regions.length)], rng.nextInt(300), rng.nextInt(20) == 0, value);
    }

    static String header(ConsumerRecord<String, String> r, String name) {
        Header h = r.headers().lastHeader(name);
        return h == null ? null : new String(h.value(), StandardCharsets.UTF_8);
    }

    @Test
    void aViewHoldsExactlyWhatTheFilterSelects() throws Exception {
        String source = Broker.uniqueTopic("orders");
        String view = source + "-selected";
        TransactionsTest.createTopic(source, PARTITIONS);
        try (Admin admin = Admin.create(Broker.props())) {
            admin.createTopics(List.of(new NewTopic(view, PARTITIONS, (short) 1)
                    .configs(Map.of("rill.view.source", source, "rill.view.filter", FILTER))))
                    .all().get(30, TimeUnit.SECONDS);
            // A bad filter is refused at creation, naming the column.
            ExecutionException e = assertThrows(ExecutionException.class, () -> admin.createTopics(
                    List.of(new NewTopic(view + "-bad", 1, (short) 1).configs(Map.of(
                            "rill.view.source", source, "rill.view.filter", "region = 'eu' AND"))))
                    .all().get(30, TimeUnit.SECONDS));
            assertInstanceOf(InvalidConfigurationException.class, e.getCause());
            assertTrue(e.getCause().getMessage().contains("column 18"), e.getCause().getMessage());
        }

        // Per partition, the expected view in source order: value@offset of each selected record.
        List<java.util.TreeMap<Long, String>> expected = new ArrayList<>();
        for (int p = 0; p < PARTITIONS; p++) expected.add(new java.util.TreeMap<>());
        Random rng = new Random(42);
        try (KafkaProducer<String, String> plain = new KafkaProducer<>(Broker.props(),
                new org.apache.kafka.common.serialization.StringSerializer(),
                new org.apache.kafka.common.serialization.StringSerializer());
             KafkaProducer<String, String> txn = TransactionsTest.txnProducer(source + "-txn")) {
            txn.initTransactions();
            for (int round = 0; round < 6; round++) {
                boolean abort = round % 3 == 2;
                List<Order> orders = new ArrayList<>();
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                txn.beginTransaction();
                for (int i = 0; i < 150; i++) {
                    Order o = randomOrder(rng, "r" + round + "-" + i);
                    int partition = i % PARTITIONS;
                    orders.add(o);
                    // Half the records from a plain producer, half in the transaction.
                    acks.add((i % 2 == 0 ? plain : txn).send(o.toRecord(source, partition)));
                }
                plain.flush();
                txn.flush();
                if (abort) txn.abortTransaction(); else txn.commitTransaction();
                for (int i = 0; i < orders.size(); i++) {
                    Order o = orders.get(i);
                    boolean aborted = abort && i % 2 == 1;
                    if (o.selected() && !aborted) {
                        RecordMetadata m = acks.get(i).get(30, TimeUnit.SECONDS);
                        expected.get(m.partition()).put(m.offset(), o.value() + "@" + m.offset());
                    }
                }
            }
        }

        for (int p = 0; p < PARTITIONS; p++) {
            int partition = p;
            List<String> want = new ArrayList<>(expected.get(p).values());
            assertTrue(want.size() > 20, "the data selects enough records: " + want.size());
            // The view's end offset reaches the expected count once the maintainer caught up.
            List<String> got = TransactionsTest.settled(
                    () -> TransactionsTest.readAll(view, partition, IsolationLevel.READ_COMMITTED).stream()
                            .map(r -> r.value() + "@" + header(r, "rill-source-offset")).toList(),
                    g -> g.size() >= want.size());
            assertEquals(want, got, "view partition " + p);
        }
    }
}
