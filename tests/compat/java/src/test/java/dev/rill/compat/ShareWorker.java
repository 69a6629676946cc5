package dev.rill.compat;

import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.StringJoiner;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;

/**
 * A share consumer in its own JVM, for {@link ShareGroupsTest}: polls until it has acquired
 * records, prints "ACQUIRED k1,k2,..." and then holds them without acknowledging, until the
 * test kills the JVM with SIGKILL.
 *
 * <p>Args: bootstrap, group, topic.
 */
public final class ShareWorker {
    public static void main(String[] args) throws Exception {
        Properties p = ShareGroupsTest.consumerProps(args[0], args[1]);
        p.put("max.poll.records", "50");
        KafkaShareConsumer<String, String> consumer = new KafkaShareConsumer<>(p);
        consumer.subscribe(List.of(args[2]));
        long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
        while (System.nanoTime() < deadline) {
            ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
            if (records.isEmpty()) continue;
            StringJoiner keys = new StringJoiner(",");
            for (ConsumerRecord<String, String> r : records) keys.add(r.key());
            System.out.println("ACQUIRED " + keys);
            System.out.flush();
            Thread.sleep(Long.MAX_VALUE);
        }
        System.out.println("NOTHING");
    }
}
