// Records Apache Kafka's DescribeConfigs answer for a topic with no overrides and for the
// broker, with synonyms and documentation, one config per line (tab-separated, values
// percent-escaped), so rill's answers can be compared field by field. Run by
// scripts/record-kafka-configs; single-file source launch, no build.
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.config.ConfigResource;

public class DumpConfigs {
    static String esc(String s) {
        if (s == null) return "\\N";
        StringBuilder b = new StringBuilder();
        for (char c : s.toCharArray()) {
            if (c == '%' || c == '\t' || c == '\n' || c == '\r' || c == '\\') b.append(String.format("%%%02X", (int) c));
            else b.append(c);
        }
        return b.toString();
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            admin.createTopics(List.of(new NewTopic("fixture", 1, (short) 1))).all().get();
            ConfigResource topic = new ConfigResource(ConfigResource.Type.TOPIC, "fixture");
            DescribeConfigsOptions o = new DescribeConfigsOptions().includeSynonyms(true).includeDocumentation(true);
            Config c = admin.describeConfigs(List.of(topic), o).all().get().get(topic);
            List<ConfigEntry> entries = new ArrayList<>(c.entries());
            entries.sort(Comparator.comparing(ConfigEntry::name));
            for (ConfigEntry e : entries) {
                StringBuilder syn = new StringBuilder();
                for (ConfigEntry.ConfigSynonym s : e.synonyms()) {
                    if (syn.length() > 0) syn.append(';');
                    syn.append(esc(s.name())).append('=').append(esc(s.value())).append('@').append(s.source());
                }
                System.out.println(String.join("\t", "topic", esc(e.name()), esc(e.value()), e.source().toString(),
                    Boolean.toString(e.isReadOnly()), Boolean.toString(e.isSensitive()), e.type().toString(),
                    syn.toString(), esc(e.documentation())));
            }
        }
    }
}
