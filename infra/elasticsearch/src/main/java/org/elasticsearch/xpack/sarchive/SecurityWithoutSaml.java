package org.elasticsearch.xpack.sarchive;

import org.elasticsearch.action.ActionRequest;
import org.elasticsearch.action.ActionResponse;
import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.xpack.security.Security;

import java.util.List;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * x-pack security (org.elasticsearch.plugin:x-pack-security) minus its SAML actions. The SAML transport actions'
 * constructors reference OpenSAML classes, which are published only in the Shibboleth repository, not on Maven
 * Central; Guice resolves every action constructor at node construction, so with them registered the node cannot
 * start. Nothing else (native/file realms, API keys, TLS) needs OpenSAML.
 *
 * <p>The package is org.elasticsearch.xpack.* because ActionModule only lets plugins from that package install the
 * REST interceptor that security needs (authentication of REST requests).
 */
public class SecurityWithoutSaml extends Security {

    public SecurityWithoutSaml(Settings settings) {
        super(settings);
    }

    private static boolean isSaml(Class<?> c) {
        return c.getName().contains(".saml.");
    }

    @Override
    public List<ActionHandler<? extends ActionRequest, ? extends ActionResponse>> getActions() {
        return super.getActions().stream().filter(h -> isSaml(h.getTransportAction()) == false).toList();
    }

    @Override
    public List<RestHandler> getRestHandlers(
        Settings settings,
        NamedWriteableRegistry namedWriteableRegistry,
        RestController restController,
        ClusterSettings clusterSettings,
        IndexScopedSettings indexScopedSettings,
        SettingsFilter settingsFilter,
        IndexNameExpressionResolver indexNameExpressionResolver,
        Supplier<DiscoveryNodes> nodesInCluster,
        Predicate<NodeFeature> clusterSupportsFeature
    ) {
        return super.getRestHandlers(
            settings,
            namedWriteableRegistry,
            restController,
            clusterSettings,
            indexScopedSettings,
            settingsFilter,
            indexNameExpressionResolver,
            nodesInCluster,
            clusterSupportsFeature
        ).stream().filter(h -> isSaml(h.getClass()) == false).toList();
    }
}
