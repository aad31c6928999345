package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pkg/config/mesh"
	kubelabels "istio.io/istio/pkg/kube/labels"
	"istio.io/istio/pkg/model"
)

// Envoy's resource types, as it asks for them over ADS.
const (
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	routeType    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// The labels Istio's sidecar injector adds to a pod (injection-template.yaml), which the
// control plane reads back from the pod (tlsMode decides auto-mTLS towards it).
const (
	labelTLSMode           = "security.istio.io/tlsMode"
	labelCanonicalName     = "service.istio.io/canonical-name"
	labelCanonicalRevision = "service.istio.io/canonical-revision"
	annotationInterception = "sidecar.istio.io/interceptionMode"
	annotationProxyConfig  = "proxy.istio.io/config"
)

func isGateway(pod *corev1.Pod) bool { return pod.Labels["istio"] == "ingressgateway" }

// owner finds the Deployment whose selector matches the pod (the injector's DeploymentMeta).
func owner(pod *corev1.Pod, deployments []*deploymentRef) *deploymentRef {
	for _, d := range deployments {
		if d.namespace == pod.Namespace && d.selector.Matches(labels.Set(pod.Labels)) {
			return d
		}
	}
	return nil
}

// inject adds the labels the sidecar injector adds to a sidecar pod; changes lists them.
func inject(pod *corev1.Pod, deployments []*deploymentRef) (changes []string) {
	if isGateway(pod) {
		return nil
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	workload := pod.Name
	if d := owner(pod, deployments); d != nil {
		workload = d.name
	}
	set := func(key, value string) {
		if _, ok := pod.Labels[key]; !ok {
			pod.Labels[key] = value
			changes = append(changes, fmt.Sprintf("pod label %s=%s added, as Istio's sidecar injector does", key, value))
		}
	}
	set(labelTLSMode, "istio")
	set(labelCanonicalName, firstOf(pod.Labels["app.kubernetes.io/name"], pod.Labels["app"], workload))
	set(labelCanonicalRevision, firstOf(pod.Labels["app.kubernetes.io/version"], pod.Labels["version"], "latest"))
	return changes
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// node is the Envoy node a pod's proxy presents: the id and metadata the injector's environment
// (injection-template.yaml) and pilot-agent (pkg/bootstrap) give it.
func node(pod *corev1.Pod, deployments []*deploymentRef, m *meshconfig.MeshConfig, version string) (*core.Node, error) {
	proxyType := "sidecar"
	if isGateway(pod) {
		proxyType = "router"
	}
	proxyConfig := m.GetDefaultConfig()
	if annotation, ok := pod.Annotations[annotationProxyConfig]; ok {
		merged, err := mesh.MergeProxyConfig(annotation, proxyConfig)
		if err != nil {
			return nil, fmt.Errorf("Pod %s/%s: annotation %s: %v", pod.Namespace, pod.Name, annotationProxyConfig, err)
		}
		proxyConfig = merged
	}
	meta := model.BootstrapNodeMetadata{InstanceName: pod.Name}
	meta.Namespace = pod.Namespace
	meta.Labels = pod.Labels
	meta.Annotations = pod.Annotations
	meta.ServiceAccount = pod.Spec.ServiceAccountName
	meta.InstanceIPs = []string{pod.Status.PodIP}
	meta.IstioVersion = version
	meta.ClusterID = "Kubernetes"
	meta.MeshID = m.GetTrustDomain()
	meta.NodeName = pod.Spec.NodeName
	meta.ProxyConfig = (*model.NodeMetaProxyConfig)(proxyConfig)
	meta.EnvoyStatusPort = 15021
	meta.EnvoyPrometheusPort = 15090
	if proxyType == "sidecar" {
		meta.InterceptionMode = model.TrafficInterceptionMode(firstOf(pod.Annotations[annotationInterception], proxyConfig.GetInterceptionMode().String()))
		var containers []string
		var ports model.PodPortList
		for _, c := range pod.Spec.Containers {
			containers = append(containers, c.Name)
			for _, p := range c.Ports {
				ports = append(ports, model.PodPort{Name: p.Name, ContainerPort: int(p.ContainerPort), Protocol: string(p.Protocol)})
			}
		}
		meta.AppContainers = strings.Join(containers, ",")
		meta.PodPorts = ports
		meta.WorkloadName = pod.Name
		if d := owner(pod, deployments); d != nil {
			meta.WorkloadName = d.name
			meta.Owner = fmt.Sprintf("kubernetes://apis/apps/v1/namespaces/%s/deployments/%s", d.namespace, d.name)
		}
	} else {
		meta.WorkloadName = firstOf(pod.Labels["app"], pod.Name)
	}
	if v := pod.Labels["service.istio.io/workload-name"]; v != "" {
		meta.WorkloadName = v
	}
	// ISTIO_META_* of the proxy config's proxyMetadata become metadata (pilot-agent), and the
	// agent reads EXIT_ON_ZERO_ACTIVE_CONNECTIONS itself.
	raw := map[string]any{}
	for k, v := range proxyConfig.GetProxyMetadata() {
		if after, ok := strings.CutPrefix(k, "ISTIO_META_"); ok {
			raw[after] = v
		}
	}
	meta.ExitOnZeroActiveConnections = model.StringBool(proxyConfig.GetProxyMetadata()["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] == "true")
	typed, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(typed, &raw); err != nil {
		return nil, err
	}
	metadata, err := structpb.NewStruct(raw)
	if err != nil {
		return nil, err
	}
	// pilot-agent's service cluster under the default tracingServiceName APP_LABEL_AND_NAMESPACE.
	cluster := meta.WorkloadName + "." + pod.Namespace
	if app, ok := kubelabels.GetApp(pod.Labels); ok {
		cluster = app + "." + pod.Namespace
	}
	return &core.Node{
		// The pod's DNS domain: the fake registry's (and a default cluster's) domain suffix.
		Id:       fmt.Sprintf("%s~%s~%s.%s~%s.svc.cluster.local", proxyType, pod.Status.PodIP, pod.Name, pod.Namespace, pod.Namespace),
		Cluster:  cluster,
		Metadata: metadata,
	}, nil
}

// resources is what one proxy received over ADS.
type resources struct {
	Clusters  []*anypb.Any
	Endpoints []*anypb.Any
	Listeners []*anypb.Any
	Routes    []*anypb.Any
	// The secrets the config says to fetch over ADS (a gateway's credentialName,
	// `kubernetes://NAME`), and those of them istiod answered.
	SecretNames []string
	Secrets     []*anypb.Any
}

// secretWait bounds the wait for istiod's secrets: it sends nothing at all for a Secret that
// is absent or that the proxy may not read (pilot/pkg/xds/sds.go), as Envoy's listener would
// then go on without it after its initial fetch timeout.
const secretWait = 5 * time.Second

// fetch asks the discovery server on `conn` for a proxy's configuration the way Envoy does: CDS, then
// EDS for the EDS clusters, LDS, then RDS for the routes the listeners name, then the secrets
// the listeners and clusters name with an ADS config source (a gateway's credentialName).
func fetch(conn *grpc.ClientConn, n *core.Node, timeout time.Duration) (*resources, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, fmt.Errorf("ADS stream: %v", err)
	}
	ask := func(typeURL string, names []string) ([]*anypb.Any, error) {
		req := &discovery.DiscoveryRequest{Node: n, TypeUrl: typeURL, ResourceNames: names}
		if err := stream.Send(req); err != nil {
			return nil, fmt.Errorf("ADS request %s: %v", typeURL, err)
		}
		for {
			resp, err := stream.Recv()
			if err != nil {
				return nil, fmt.Errorf("ADS response %s: %v", typeURL, err)
			}
			// ACK, as Envoy does, so the server considers the proxy in sync.
			ack := &discovery.DiscoveryRequest{
				Node: n, TypeUrl: resp.TypeUrl, ResourceNames: names,
				VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce,
			}
			if err := stream.Send(ack); err != nil {
				return nil, fmt.Errorf("ADS ack %s: %v", typeURL, err)
			}
			if resp.TypeUrl == typeURL {
				return resp.Resources, nil
			}
		}
	}
	out := &resources{}
	if out.Clusters, err = ask(clusterType, nil); err != nil {
		return nil, err
	}
	edsNames, err := edsClusterNames(out.Clusters)
	if err != nil {
		return nil, err
	}
	if len(edsNames) > 0 {
		if out.Endpoints, err = ask(endpointType, edsNames); err != nil {
			return nil, err
		}
	}
	if out.Listeners, err = ask(listenerType, nil); err != nil {
		return nil, err
	}
	routeNames, err := rdsRouteNames(out.Listeners)
	if err != nil {
		return nil, err
	}
	if len(routeNames) > 0 {
		if out.Routes, err = ask(routeType, routeNames); err != nil {
			return nil, err
		}
	}
	if out.SecretNames, err = adsSecretNames(out.Listeners, out.Clusters); err != nil || len(out.SecretNames) == 0 {
		return out, err
	}
	// The last request on the stream: ending the stream is how the wait is bounded.
	timer := time.AfterFunc(secretWait, cancel)
	defer timer.Stop()
	if out.Secrets, err = ask(secretType, out.SecretNames); err != nil && ctx.Err() == nil {
		return nil, err
	}
	return out, nil
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
