package org.logfwd.testnode;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.bootstrap.BootstrapCheck;
import org.opensearch.bootstrap.BootstrapContext;
import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.BoundTransportAddress;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * logfwd's own launcher for a real single-node OpenSearch inside one JVM, for tests.
 *
 * <p>A distribution tarball is not reachable from the test machines, Maven Central is:
 * this class starts {@link Node} from the server jar and loads the modules a distribution
 * would load from its modules/ directory (HTTP transport, analysis, painless, ingest)
 * straight from the classpath. Production-only start checks (bootstrap checks, security
 * manager, jar hell over a plugins directory) are not part of this path.
 *
 * <p>Usage: {@code OpenSearchTestNode --home DIR --http-port N --transport-port N [-Skey=value ...]}.
 * Each {@code -S} argument is a node setting, e.g. {@code -Sthread_pool.write.size=1}, so a
 * test can shrink the write pool to provoke real 429 answers. Prints one line
 * {@code LOGFWD-OPENSEARCH-STARTED http=PORT} once the node listens. SIGTERM closes it cleanly.
 */
public final class OpenSearchTestNode {

    /** Modules loaded from the classpath when present (a distribution loads them from modules/). */
    private static final String[] PLUGINS = {
        "org.opensearch.transport.Netty4Plugin",
        "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "org.opensearch.painless.PainlessPlugin",
        "org.opensearch.ingest.common.IngestCommonPlugin",
    };

    /** A Node whose constructor with classpath plugins is reachable, without production checks. */
    static final class TestNode extends Node {
        TestNode(Environment env, List<Class<? extends Plugin>> plugins) {
            super(env, plugins, true);
        }

        /** Bootstrap checks guard production hosts (file descriptors, mmap count, heap); a test node skips them. */
        @Override
        protected void validateNodeBeforeAcceptingRequests(
            BootstrapContext context, BoundTransportAddress boundTransportAddress, List<BootstrapCheck> checks) {
        }
    }

    private OpenSearchTestNode() {}

    public static void main(String[] args) throws Exception {
        String home = null;
        String httpPort = "9200";
        String transportPort = "9300";
        Settings.Builder extra = Settings.builder();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--home") && i + 1 < args.length) {
                home = args[++i];
            } else if (a.equals("--http-port") && i + 1 < args.length) {
                httpPort = args[++i];
            } else if (a.equals("--transport-port") && i + 1 < args.length) {
                transportPort = args[++i];
            } else if (a.startsWith("-S") && a.indexOf('=') > 2) {
                int eq = a.indexOf('=');
                extra.put(a.substring(2, eq), a.substring(eq + 1));
            } else {
                System.err.println("usage: OpenSearchTestNode --home DIR [--http-port N] [--transport-port N] [-Skey=value ...]");
                System.exit(2);
            }
        }
        if (home == null) {
            System.err.println("--home DIR is required (a scratch directory; data goes to DIR/data)");
            System.exit(2);
        }
        Path homePath = Paths.get(home).toAbsolutePath();
        Files.createDirectories(homePath.resolve("config"));
        Files.createDirectories(homePath.resolve("data"));
        Files.createDirectories(homePath.resolve("logs"));

        // Modules found on the classpath. The security variant (see README.md) leaves Netty and
        // painless off the classpath: its plugin zip brings its own Netty and HTTP transport.
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : PLUGINS) {
            try {
                plugins.add(Class.forName(name).asSubclass(Plugin.class));
            } catch (ClassNotFoundException e) {
                System.out.println("LOGFWD-OPENSEARCH plugin not on classpath, skipped: " + name);
            }
        }
        boolean netty = plugins.stream().anyMatch(c -> c.getSimpleName().equals("Netty4Plugin"));

        Settings.Builder base = Settings.builder()
            .put("cluster.name", "logfwd-test")
            .put("node.name", "logfwd-test-node")
            .put("path.home", homePath.toString())
            .put("path.data", homePath.resolve("data").toString())
            .put("path.logs", homePath.resolve("logs").toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort)
            // A test machine's disk may be fuller than the default watermarks allow.
            .put("cluster.routing.allocation.disk.threshold_enabled", false);
        if (netty) {
            base.put("http.type", "netty4").put("transport.type", "netty4");
        }
        Settings settings = base.put(extra.build()).build();

        Environment env = InternalSettingsPreparer.prepareEnvironment(
            settings, Collections.emptyMap(), homePath.resolve("config"), () -> "logfwd-test-node");
        Node node = new TestNode(env, plugins);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(10, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "logfwd-opensearch-shutdown"));
        node.start();
        // One node: a replica could never be assigned and every index would stay yellow.
        // The default only applies to new indices when it is in the cluster state, not
        // when it is a node setting, hence a persistent cluster setting once started.
        // (With the security plugin the node's own client has no user and may be refused; the
        // caller then sets it over HTTP as an admin.)
        try {
            node.client().admin().cluster().prepareUpdateSettings()
                .setPersistentSettings(Settings.builder().put("cluster.default_number_of_replicas", 0))
                .get();
        } catch (RuntimeException e) {
            System.out.println("LOGFWD-OPENSEARCH could not set cluster.default_number_of_replicas: " + e);
        }
        System.out.println("LOGFWD-OPENSEARCH-STARTED http=" + httpPort);
        System.out.flush();
        closed.await();
    }
}
