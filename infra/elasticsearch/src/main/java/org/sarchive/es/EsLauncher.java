package org.sarchive.es;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.MockSecureSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.SarchiveNode;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.Plugin;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Starts a real single-node Elasticsearch (the server jar from Maven Central) with classpath plugins:
 * transport-netty4 gives it the real HTTP/transport layer.
 *
 * <p>Configuration comes from environment variables (set by infra/elasticsearch_service.py):
 * <ul>
 *   <li>SARCHIVE_ES_BASE: directory holding data/, logs/, home/ (default .run/elasticsearch)</li>
 *   <li>SARCHIVE_ES_PORT: HTTP port (default 19200)</li>
 *   <li>SARCHIVE_ES_TRANSPORT_PORT: transport port (default 19300)</li>
 *   <li>SARCHIVE_ES_HOST: bind address (default 127.0.0.1)</li>
 *   <li>SARCHIVE_ES_CONFIG: config directory (an elasticsearch.yml there is read too; file-realm users; default BASE/config)</li>
 *   <li>SARCHIVE_ES_SETTINGS: extra settings, "key=value" separated by newlines (optional)</li>
 *   <li>SARCHIVE_ES_SECURE_SETTINGS: secure settings (what elasticsearch.keystore holds), same format (optional)</li>
 *   <li>SARCHIVE_ES_SECURITY: 1 loads x-pack core + security (needs target/lib-security on the class path)</li>
 *   <li>SARCHIVE_ES_USERS: file-realm users "name:password:role,role;..." written to CONFIG/users (security only)</li>
 *   <li>SARCHIVE_ES_COMPAT_MAPPERS: 0 disables the match_only_text / wildcard stand-ins</li>
 *   <li>SARCHIVE_ES_EXTRA_PLUGINS: comma-separated plugin class names on the class path (optional)</li>
 * </ul>
 */
public final class EsLauncher {

    private EsLauncher() {}

    private static String env(String name, String dflt) {
        String v = System.getenv(name);
        return v == null || v.isBlank() ? dflt : v.trim();
    }

    public static void main(String[] args) {
        try {
            run();
        } catch (Throwable t) {
            // a failed start must end the JVM (non-daemon threads could keep it alive otherwise)
            System.out.println("[sarchive-es] startup failed:");
            t.printStackTrace(System.out);
            System.out.flush();
            Runtime.getRuntime().halt(1);
        }
    }

    private static void run() throws Exception {
        final long t0 = System.nanoTime();
        final Path base = Path.of(env("SARCHIVE_ES_BASE", ".run/elasticsearch")).toAbsolutePath();
        final String host = env("SARCHIVE_ES_HOST", "127.0.0.1");
        final String httpPort = env("SARCHIVE_ES_PORT", "19200");
        final String transportPort = env("SARCHIVE_ES_TRANSPORT_PORT", "19300");
        final Path home = base.resolve("home");
        final Path data = base.resolve("data");
        final Path logs = base.resolve("logs");
        final Path config = Path.of(env("SARCHIVE_ES_CONFIG", base.resolve("config").toString())).toAbsolutePath();
        for (Path p : List.of(home, data, logs, config)) {
            Files.createDirectories(p);
        }

        Settings.Builder sb = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", data.toString())
            .put("path.logs", logs.toString())
            .put("cluster.name", env("SARCHIVE_ES_CLUSTER_NAME", "sarchive"))
            .put("node.name", env("SARCHIVE_ES_NODE_NAME", "sarchive-es"))
            .put("discovery.type", "single-node")
            .put("network.host", host)
            .put("http.port", httpPort)
            .put("transport.port", transportPort)
            // the machine is shared and its disk may be fuller than ES likes: never block writes for it
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // thread pools sized for the 2-core box (shared with Kafka and Slurm)
            .put("node.processors", Integer.parseInt(env("SARCHIVE_ES_PROCESSORS", "2")))
            .put("logger.level", env("SARCHIVE_ES_LOG_LEVEL", "INFO"));
        final boolean security = "1".equals(env("SARCHIVE_ES_SECURITY", "0"));
        if (security == false) {
            // x-pack security (when loaded) brings its own "security4" HTTP and transport implementations
            sb.put("http.type", "netty4").put("transport.type", "netty4");
        }
        String extra = System.getenv("SARCHIVE_ES_SETTINGS");
        if (extra != null) {
            for (String line : extra.split("\n")) {
                line = line.trim();
                if (line.isEmpty() || line.startsWith("#")) continue;
                int eq = line.indexOf('=');
                if (eq <= 0) throw new IllegalArgumentException("bad SARCHIVE_ES_SETTINGS line: " + line);
                sb.put(line.substring(0, eq).trim(), line.substring(eq + 1).trim());
            }
        }
        String secure = System.getenv("SARCHIVE_ES_SECURE_SETTINGS");
        if (secure != null && secure.isBlank() == false) {
            // what the elasticsearch.keystore holds in a distribution (passwords of TLS key/trust stores, ...)
            MockSecureSettings secureSettings = new MockSecureSettings();
            for (String line : secure.split("\n")) {
                line = line.trim();
                if (line.isEmpty() || line.startsWith("#")) continue;
                int eq = line.indexOf('=');
                if (eq <= 0) throw new IllegalArgumentException("bad SARCHIVE_ES_SECURE_SETTINGS line");
                secureSettings.setString(line.substring(0, eq).trim(), line.substring(eq + 1).trim());
            }
            sb.setSecureSettings(secureSettings);
        }
        Settings settings = sb.build();

        // console logging (stdout is redirected to the log file by the service wrapper)
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(settings.get("node.name"));
        LogConfigurator.setClusterName(settings.get("cluster.name"));
        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        plugins.add(org.elasticsearch.transport.netty4.Netty4Plugin.class);
        plugins.add(RootEndpointPlugin.class);
        plugins.add(AnalysisSubsetPlugin.class);
        if (!"0".equals(env("SARCHIVE_ES_COMPAT_MAPPERS", "1"))) {
            plugins.add(CompatMappersPlugin.class);
        }
        if (security) {
            plugins.add(Class.forName("org.elasticsearch.xpack.core.XPackPlugin").asSubclass(Plugin.class));
            plugins.add(Class.forName("org.elasticsearch.xpack.sarchive.SecurityWithoutSaml").asSubclass(Plugin.class));
            String users = System.getenv("SARCHIVE_ES_USERS");
            if (users != null && users.isBlank() == false) {
                Class.forName("org.elasticsearch.xpack.sarchive.FileRealmUsers")
                    .getMethod("write", Path.class, String.class)
                    .invoke(null, config, users);
            }
        }
        for (String name : env("SARCHIVE_ES_EXTRA_PLUGINS", "").split(",")) {
            if (name.isBlank()) continue;
            plugins.add(Class.forName(name.trim()).asSubclass(Plugin.class));
        }

        Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), config, () -> settings.get("node.name"));
        final Node node = new SarchiveNode(environment, plugins);
        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            System.out.println("[sarchive-es] shutdown requested, closing node");
            try {
                node.prepareForClose();
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace(System.out);
            } finally {
                stopped.countDown();
                System.out.println("[sarchive-es] node closed");
            }
        }, "sarchive-es-shutdown"));
        node.start();
        long ms = (System.nanoTime() - t0) / 1_000_000L;
        System.out.println("[sarchive-es] started: http=" + host + ":" + httpPort + " transport=" + host + ":" + transportPort
            + " base=" + base + " plugins=" + plugins + " in " + ms + " ms");
        Files.writeString(base.resolve("startup-ms"), Long.toString(ms) + "\n");
        stopped.await();
    }
}
