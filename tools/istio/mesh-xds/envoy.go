package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// istioProxyOnly are the extensions istio-proxy (Istio's Envoy build) has and upstream Envoy
// lacks, by the type of their typed_config. Filters of these types are removed from the
// bootstrap, each removal written to the differences file.
var istioProxyOnly = map[string]string{
	"type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange":            "istio.metadata_exchange: exchanges workload metadata for istio telemetry (istio-proxy extension)",
	"type.googleapis.com/stats.PluginConfig":                                            "istio.stats: Istio's standard metrics (istio-proxy extension)",
	"type.googleapis.com/io.istio.http.peer_metadata.Config":                            "peer metadata discovery/propagation for telemetry (istio-proxy extension)",
	"type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig":     "istio.alpn: overrides the upstream ALPN with istio-http/1.0|1.1|istio-h2 (istio-proxy extension)",
	"type.googleapis.com/io.istio.network.metadata_exchange.Config":                     "metadata exchange over HBONE (istio-proxy extension)",
	"type.googleapis.com/istio.envoy.config.filter.network.metadata_exchange.v1.Config": "metadata exchange (istio-proxy extension)",
}

// jsonOf renders a proto as Envoy's JSON (proto field names, Any with @type).
func jsonOf(m proto.Message) (map[string]any, error) {
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func jsonList(list []*anypb.Any) ([]any, error) {
	out := make([]any, 0, len(list))
	for _, a := range list {
		j, err := jsonOf(a)
		if err != nil {
			return nil, fmt.Errorf("rendering %s: %v", a.TypeUrl, err)
		}
		out = append(out, j)
	}
	return out, nil
}

func edsClusterNames(clusters []*anypb.Any) ([]string, error) {
	names := map[string]bool{}
	for _, a := range clusters {
		c := &cluster.Cluster{}
		if err := a.UnmarshalTo(c); err != nil {
			return nil, err
		}
		if c.GetType() == cluster.Cluster_EDS {
			names[firstOf(c.GetEdsClusterConfig().GetServiceName(), c.Name)] = true
		}
	}
	return sortedKeys(names), nil
}

func rdsRouteNames(listeners []*anypb.Any) ([]string, error) {
	names := map[string]bool{}
	for _, a := range listeners {
		l := &listener.Listener{}
		if err := a.UnmarshalTo(l); err != nil {
			return nil, err
		}
		chains := l.FilterChains
		if l.DefaultFilterChain != nil {
			chains = append(chains, l.DefaultFilterChain)
		}
		for _, fc := range chains {
			for _, f := range fc.Filters {
				h := &hcm.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(h) {
					if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
						return nil, err
					}
					if name := h.GetRds().GetRouteConfigName(); name != "" {
						names[name] = true
					}
				}
			}
		}
	}
	return sortedKeys(names), nil
}

// adsSecretNames are the SDS secrets the listeners and clusters name with an ADS config source
// (`sds_config: {ads: {}}`): those istiod serves on the proxy's own ADS stream, as it does a
// gateway's credentialName (`kubernetes://NAME`), rather than pilot-agent's SDS server.
func adsSecretNames(lists ...[]*anypb.Any) ([]string, error) {
	names := map[string]bool{}
	var visit func(node any)
	visit = func(node any) {
		switch v := node.(type) {
		case map[string]any:
			if source, ok := v["sds_config"].(map[string]any); ok {
				if _, ads := source["ads"]; ads {
					names[str(v, "name")] = true
				}
			}
			for _, child := range v {
				visit(child)
			}
		case []any:
			for _, child := range v {
				visit(child)
			}
		}
	}
	for _, list := range lists {
		rendered, err := jsonList(list)
		if err != nil {
			return nil, err
		}
		visit(rendered)
	}
	return sortedKeys(names), nil
}

// bootstrap turns what a proxy received over ADS into a static Envoy bootstrap for upstream
// Envoy; differences lists every change.
type bootstrap struct {
	sdsDir      string
	endpoints   map[string]map[string]any // ClusterLoadAssignment by cluster/service name
	routes      map[string]map[string]any // RouteConfiguration by name
	differences []string
	secrets     map[string]bool
}

func (b *bootstrap) note(format string, args ...any) {
	b.differences = append(b.differences, fmt.Sprintf(format, args...))
}

func buildBootstrap(nodeJSON map[string]any, got *resources, sdsDir string) (map[string]any, []string, error) {
	b := &bootstrap{sdsDir: sdsDir, endpoints: map[string]map[string]any{}, routes: map[string]map[string]any{}, secrets: map[string]bool{}}
	var endpoints, routes, listeners, clusters []map[string]any
	for _, r := range []struct {
		from []*anypb.Any
		to   *[]map[string]any
	}{{got.Endpoints, &endpoints}, {got.Routes, &routes}, {got.Listeners, &listeners}, {got.Clusters, &clusters}} {
		list, err := jsonList(r.from)
		if err != nil {
			return nil, nil, err
		}
		for _, item := range list {
			m := item.(map[string]any)
			// Static resources are the messages themselves, not Any.
			delete(m, "@type")
			*r.to = append(*r.to, m)
		}
	}
	for _, e := range endpoints {
		b.endpoints[str(e, "cluster_name")] = e
	}
	for _, r := range routes {
		b.routes[str(r, "name")] = r
	}
	for _, l := range listeners {
		if err := b.walk(l, "listener "+str(l, "name")); err != nil {
			return nil, nil, err
		}
	}
	for _, c := range clusters {
		b.staticCluster(c)
		if err := b.walk(c, "cluster "+str(c, "name")); err != nil {
			return nil, nil, err
		}
	}
	answered := map[string]bool{}
	for _, s := range got.Secrets {
		answered[secretName(s)] = true
	}
	for _, name := range sortedKeys(b.secrets) {
		switch {
		case !slices.Contains(got.SecretNames, name):
			b.note("SDS secret %q: served from the file %s (path_config_source) instead of pilot-agent's SDS server over the sds-grpc cluster", name, b.secretPath(name))
		case answered[name]:
			b.note("SDS secret %q: istiod's answer on the ADS stream written to the file %s (path_config_source), read from there instead of over ADS", name, b.secretPath(name))
		default:
			b.note("SDS secret %q: istiod sent nothing for it within %s (no such Secret, or the proxy may not read it), so %s holds no resource and what uses it has no certificate", name, secretWait, b.secretPath(name))
		}
	}
	out := map[string]any{
		"node": nodeJSON,
		"static_resources": map[string]any{
			"listeners": listeners,
			"clusters":  clusters,
		},
	}
	// Nothing may still point at a control plane that is not there.
	data, err := json.Marshal(out)
	if err != nil {
		return nil, nil, err
	}
	for _, leftover := range []string{`"ads"`, `"xds-grpc"`, `"sds-grpc"`, `"api_config_source"`} {
		if strings.Contains(string(data), leftover) {
			return nil, nil, fmt.Errorf("the bootstrap still refers to %s after the rewrite", leftover)
		}
	}
	return out, b.differences, nil
}

func (b *bootstrap) secretPath(name string) string {
	return secretFile(b.sdsDir, name)
}

// secretFile is where the secret `name` is read from: a file of the proxy's SDS directory
// (`kubernetes://bookshop-tls` as `kubernetes___bookshop-tls.yaml`).
func secretFile(sdsDir, name string) string {
	return filepath.Join(sdsDir, strings.NewReplacer(":", "_", "/", "_").Replace(name)+".yaml")
}

// staticCluster replaces EDS with the load assignment Istio computed for the cluster.
func (b *bootstrap) staticCluster(c map[string]any) {
	if c["type"] != "EDS" {
		return
	}
	name := str(c, "name")
	service := name
	if eds, ok := c["eds_cluster_config"].(map[string]any); ok {
		if s, ok := eds["service_name"].(string); ok && s != "" {
			service = s
		}
	}
	assignment, ok := b.endpoints[service]
	if !ok {
		assignment = map[string]any{}
	}
	assignment["cluster_name"] = name
	kind := "STATIC"
	count := 0
	for _, group := range listOf(assignment["endpoints"]) {
		for _, lb := range listOf(dig(group, "lb_endpoints")) {
			count++
			address := dig(lb, "endpoint", "address", "socket_address", "address")
			if s, ok := address.(string); ok && net.ParseIP(s) == nil {
				kind = "STRICT_DNS"
			}
		}
	}
	delete(c, "eds_cluster_config")
	c["type"] = kind
	c["load_assignment"] = assignment
	b.note("cluster %q: EDS replaced by type %s with the %d endpoint(s) Istio's EDS answered for %q", name, kind, count, service)
}

// walk rewrites, in place, what upstream Envoy cannot load from a file: RDS references,
// SDS over gRPC, and istio-proxy's own filters.
func (b *bootstrap) walk(node any, where string) error {
	switch v := node.(type) {
	case map[string]any:
		if name, ok := v["name"].(string); ok && where != "" {
			if _, isFilter := v["typed_config"]; isFilter {
				where = where + " > " + name
			}
		}
		if rds, ok := v["rds"].(map[string]any); ok {
			name, _ := rds["route_config_name"].(string)
			route, found := b.routes[name]
			if !found {
				return fmt.Errorf("%s: route %q was not in Istio's RDS answer", where, name)
			}
			delete(v, "rds")
			v["route_config"] = route
			b.note("%s: RDS route %q inlined as route_config", where, name)
		}
		if _, ok := v["sds_config"]; ok {
			name, _ := v["name"].(string)
			if name == "" {
				return fmt.Errorf("%s: an SDS reference without a secret name", where)
			}
			b.secrets[name] = true
			v["sds_config"] = map[string]any{
				"path_config_source":   map[string]any{"path": b.secretPath(name)},
				"resource_api_version": "V3",
			}
		}
		for key, child := range v {
			list, ok := child.([]any)
			if !ok {
				if err := b.walk(child, where); err != nil {
					return err
				}
				continue
			}
			kept := list[:0]
			for _, item := range list {
				if reason, drop := b.istioOnly(item); drop {
					b.note("%s: removed %s %q (%s): %s", where, key, dig(item, "name"), dig(item, "typed_config", "@type"), reason)
					continue
				}
				if err := b.walk(item, where); err != nil {
					return err
				}
				kept = append(kept, item)
			}
			v[key] = kept
		}
	case []any:
		for _, item := range v {
			if err := b.walk(item, where); err != nil {
				return err
			}
		}
	}
	return nil
}

// istioOnly says whether a list item is a filter upstream Envoy lacks (directly, or wrapped
// in a TypedStruct).
func (b *bootstrap) istioOnly(item any) (string, bool) {
	for _, t := range []any{dig(item, "typed_config", "@type"), dig(item, "typed_config", "type_url"), dig(item, "config_discovery", "default_config", "@type")} {
		if s, ok := t.(string); ok {
			if reason, found := istioProxyOnly[s]; found {
				return reason, true
			}
		}
	}
	return "", false
}

func dig(node any, keys ...string) any {
	for _, k := range keys {
		m, ok := node.(map[string]any)
		if !ok {
			return nil
		}
		node = m[k]
	}
	return node
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

func listOf(v any) []any {
	l, _ := v.([]any)
	return l
}

// secretName is the name of a Secret resource istiod sent.
func secretName(a *anypb.Any) string {
	s := &tlsv3.Secret{}
	if err := a.UnmarshalTo(s); err != nil {
		return ""
	}
	return s.Name
}

// writeADSSecrets writes each secret istiod sent over ADS as the file-based SDS resource the
// bootstrap reads (key material: 0600, as istio-agent's own files), and for each one it did
// not send, a file with no resource: Envoy rejects that update and starts without the secret,
// as a gateway's Envoy does once its initial fetch of an unanswered secret times out (a file
// that does not exist would fail the whole bootstrap instead).
func writeADSSecrets(got *resources, sdsDir string) error {
	if len(got.SecretNames) == 0 {
		return nil
	}
	if err := os.MkdirAll(sdsDir, 0o755); err != nil {
		return err
	}
	resources := map[string][]any{}
	for _, name := range got.SecretNames {
		resources[name] = []any{}
	}
	for _, a := range got.Secrets {
		resource, err := jsonOf(a)
		if err != nil {
			return err
		}
		resources[secretName(a)] = []any{resource}
	}
	for name, list := range resources {
		data, err := json.Marshal(map[string]any{"resources": list})
		if err != nil {
			return err
		}
		if err := os.WriteFile(secretFile(sdsDir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
