package org.elasticsearch.node;

import org.elasticsearch.env.Environment;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;

import java.util.Collection;
import java.util.List;

/**
 * A production {@link Node} whose plugins are classes on the classpath (like the test framework's MockNode), but
 * without MockNode's dependency on ESTestCase, whose static initialiser runs BootstrapForTesting (native
 * initialisation that refuses root, jar-hell checks, entitlements). Lives in org.elasticsearch.node because
 * {@link Node#Node(NodeConstruction)} and {@link NodeServiceProvider} are package-private; on the class path a
 * split package is fine.
 */
public class SarchiveNode extends Node {

    private final List<Class<? extends Plugin>> classpathPlugins;

    public SarchiveNode(Environment environment, Collection<Class<? extends Plugin>> classpathPlugins) {
        super(NodeConstruction.prepareConstruction(environment, null, new ClasspathServiceProvider(classpathPlugins), true));
        this.classpathPlugins = List.copyOf(classpathPlugins);
    }

    public List<Class<? extends Plugin>> getClasspathPlugins() {
        return classpathPlugins;
    }

    private static final class ClasspathServiceProvider extends NodeServiceProvider {
        private final Collection<Class<? extends Plugin>> plugins;

        ClasspathServiceProvider(Collection<Class<? extends Plugin>> plugins) {
            this.plugins = plugins;
        }

        @Override
        PluginsService newPluginService(Environment environment, PluginsLoader pluginsLoader) {
            return new MockPluginsService(environment.settings(), environment, plugins);
        }
    }
}
