package dev.rill.compat;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The broker under test, one per JVM. With env KAFKA_BOOTSTRAP set, that address is used
 * and nothing is started (how the suite is validated against Apache Kafka). Otherwise a
 * fresh `rill serve --listen 127.0.0.1:0 --data-dir <temp>` is started (RILL_BIN, default
 * <repo>/target/release/rill), its "rill listening on 127.0.0.1:PORT" line is read with a
 * timeout, and the process is stopped (SIGTERM, then SIGKILL) when the JVM exits.
 */
final class Broker {
    private static final Pattern READY = Pattern.compile("^rill listening on (127\\.0\\.0\\.1:\\d+)\\s*$");
    private static final long READY_TIMEOUT_S = 30;
    private static final long STOP_GRACE_S = 5;
    private static String bootstrap;

    private Broker() {}

    static synchronized String bootstrap() {
        if (bootstrap != null) return bootstrap;
        String ext = System.getenv("KAFKA_BOOTSTRAP");
        if (ext != null && !ext.isEmpty()) {
            bootstrap = ext;
            return bootstrap;
        }
        try {
            bootstrap = startRill();
        } catch (Exception e) {
            throw new IllegalStateException("could not start rill: " + e.getMessage(), e);
        }
        return bootstrap;
    }

    /** group.consumer.session.timeout.ms of the shared rill (KIP-848 tests wait for it). */
    static final int CONSUMER_SESSION_TIMEOUT_MS = 6000;

    private static String startRill() throws Exception {
        return start("--group-consumer-session-timeout-ms", String.valueOf(CONSUMER_SESSION_TIMEOUT_MS),
                "--group-consumer-heartbeat-interval-ms", "1000").address();
    }

    /** A started rill process: its address, stopped (SIGTERM) at JVM exit or by {@link #stop}. */
    record Started(Process process, Path tmp, String address, String[] extra) {
        void stop() {
            Broker.stop(process, tmp);
        }

        /** SIGKILLs the process and starts rill again on the same address and data dir. */
        Started killAndRestart() throws Exception {
            process.destroyForcibly();
            process.waitFor(STOP_GRACE_S, TimeUnit.SECONDS);
            return startAt(tmp, address, extra);
        }
    }

    /** Starts a further rill on its own temp data dir, with extra `rill serve` flags. */
    static Started start(String... extra) throws Exception {
        Path tmp = Files.createTempDirectory("rill-compat-java-");
        Files.createDirectories(tmp.resolve("data"));
        return startAt(tmp, "127.0.0.1:0", extra);
    }

    /** Starts rill on `tmp`/data, listening on `listen`. */
    private static Started startAt(Path tmp, String listen, String... extra) throws Exception {
        String repo = System.getProperty("rill.repo", "../../..");
        String bin = System.getenv().getOrDefault("RILL_BIN", repo + "/target/release/rill");
        if (!new File(bin).canExecute()) throw new IOException("rill binary not found at " + bin);
        Path data = tmp.resolve("data");
        List<String> command = new java.util.ArrayList<>(
                List.of(bin, "serve", "--listen", listen, "--data-dir", data.toString()));
        command.addAll(List.of(extra));
        Process p = new ProcessBuilder(command)
                .redirectError(ProcessBuilder.Redirect.appendTo(tmp.resolve("rill-stderr.log").toFile()))
                .redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null")))
                .start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(p, tmp)));
        BlockingQueue<String> first = new ArrayBlockingQueue<>(1);
        Thread reader = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
                String line = r.readLine();
                first.offer(line == null ? "<eof>" : line);
                while (r.readLine() != null) { /* drain so the broker never blocks on stdout */ }
            } catch (IOException e) {
                first.offer("<io error: " + e + ">");
            }
        }, "rill-stdout");
        reader.setDaemon(true);
        reader.start();
        String line = first.poll(READY_TIMEOUT_S, TimeUnit.SECONDS);
        Matcher m = READY.matcher(line == null ? "" : line);
        if (!m.matches()) {
            p.destroyForcibly();
            throw new IOException("rill did not print its listening line within " + READY_TIMEOUT_S
                    + " s (got " + line + "); stderr in " + tmp.resolve("rill-stderr.log"));
        }
        return new Started(p, tmp, m.group(1), extra);
    }

    private static void stop(Process p, Path tmp) {
        p.destroy();  // SIGTERM
        try {
            if (!p.waitFor(STOP_GRACE_S, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                p.waitFor(STOP_GRACE_S, TimeUnit.SECONDS);
            }
        } catch (InterruptedException ignored) {
            p.destroyForcibly();
        }
        String logDir = System.getenv("RILL_COMPAT_LOG_DIR");
        if (logDir != null && !logDir.isEmpty()) {
            try {
                Files.copy(tmp.resolve("rill-stderr.log"), Path.of(logDir, "java-rill.log"),
                        java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            } catch (IOException ignored) {
            }
        }
        try (var walk = Files.walk(tmp)) {
            walk.sorted(Comparator.reverseOrder()).map(Path::toFile).forEach(File::delete);
        } catch (IOException ignored) {
        }
    }

    static Properties props() {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap());
        p.put("request.timeout.ms", "30000");
        p.put("default.api.timeout.ms", "60000");
        return p;
    }

    static String uniqueTopic(String prefix) {
        return "java-" + prefix + "-" + UUID.randomUUID().toString().substring(0, 8);
    }

    static List<String> list(String... s) {
        return List.of(s);
    }
}
