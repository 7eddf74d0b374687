package mailstream.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.inject.Produces;
import javax.inject.Singleton;

/**
 * The one bean of apicurio-common-app-components-config-index, whose Quarkus deployment
 * artifact is not published: no dynamic configuration properties.
 */
public class NoDynamicProperties {
    @Produces
    @Singleton
    DynamicConfigPropertyList dynamicConfigProperties() {
        return new DynamicConfigPropertyList(List.of());
    }
}
