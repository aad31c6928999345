package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
	corev1 "k8s.io/api/core/v1"

	meshconfig "istio.io/api/mesh/v1alpha1"
	agentconfig "istio.io/istio/pilot/cmd/pilot-agent/config"
	agentbootstrap "istio.io/istio/pkg/bootstrap"
	"istio.io/istio/pkg/config/constants"
	kubelabels "istio.io/istio/pkg/kube/labels"
	"istio.io/istio/pkg/model"
)

// proxyContainer is the pod's istio-proxy: a native sidecar (an init container the injector
// added), or a container (the gateway's).
func proxyContainer(pod *corev1.Pod) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == "istio-proxy" {
				return &list[i]
			}
		}
	}
	return nil
}

// containerEnv is the istio-proxy container's environment as the kubelet would give it:
// plain values, and the downward API fields pilot-agent reads, from the pod object. The
// resource fields (GOMEMLIMIT, GOMAXPROCS, ISTIO_CPU_LIMIT) only tune the Go runtime and
// Envoy's concurrency; they are left out, and so is what no container here can resolve.
func containerEnv(pod *corev1.Pod, c *corev1.Container) (map[string]string, []string) {
	fields := map[string]string{
		"metadata.name": pod.Name, "metadata.namespace": pod.Namespace, "metadata.uid": string(pod.UID),
		"spec.serviceAccountName": pod.Spec.ServiceAccountName, "spec.nodeName": pod.Spec.NodeName,
		"status.podIP": pod.Status.PodIP, "status.hostIP": pod.Status.HostIP,
	}
	env := map[string]string{}
	var skipped []string
	for _, v := range c.Env {
		switch {
		case v.ValueFrom == nil:
			env[v.Name] = expand(v.Value, env)
		case v.ValueFrom.FieldRef != nil:
			if value, ok := fields[v.ValueFrom.FieldRef.FieldPath]; ok {
				env[v.Name] = value
			} else {
				skipped = append(skipped, fmt.Sprintf("env %s (field %s) left out: not resolved here", v.Name, v.ValueFrom.FieldRef.FieldPath))
			}
		default:
			skipped = append(skipped, fmt.Sprintf("env %s left out: a resource limit or a reference, which only tunes the agent's runtime", v.Name))
		}
	}
	return env, skipped
}

var reference = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expand replaces $(NAME) with an earlier variable of the container, as the kubelet does.
func expand(s string, env map[string]string) string {
	return reference.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// downwardAPI renders a map the way the kubelet writes metadata.labels into a file
// (`key="value"` lines, sorted), which pilot-agent reads from ./etc/istio/pod.
func downwardAPI(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, strconv.Quote(m[k]))
	}
	return []byte(b.String())
}

// agentNode is the Envoy node pilot-agent would present for `pod`, built by pilot-agent's own
// code from what the injected pod gives it: the istio-proxy container's arguments (`proxy
// sidecar|router`, --domain) and environment (POD_NAME, INSTANCE_IP, SERVICE_ACCOUNT,
// PROXY_CONFIG, ISTIO_META_*), the pod's labels and annotations as the downward API volume
// puts them under ./etc/istio/pod, and the mesh config file the container mounts (`mesh`,
// under ./etc/istio/config). `workdir` stands in for the container's working directory.
// differences lists what could not be as in the pod.
func agentNode(pod *corev1.Pod, meshFile []byte, workdir string) (n *core.Node, differences []string, err error) {
	c := proxyContainer(pod)
	if c == nil {
		return nil, nil, fmt.Errorf("no istio-proxy container")
	}
	env, differences := containerEnv(pod, c)
	// The proxyv2 image's pilot-agent reports its own version (stamped at build); this one
	// reports the image's tag, its release.
	if i := strings.LastIndex(c.Image, ":"); i > 0 && env["ISTIO_META_ISTIO_VERSION"] == "" {
		env["ISTIO_META_ISTIO_VERSION"] = c.Image[i+1:]
	}
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		args[i] = expand(a, env)
	}
	if len(args) < 2 || args[0] != "proxy" {
		return nil, nil, fmt.Errorf("istio-proxy's arguments %q are not `proxy TYPE …`", args)
	}
	proxyType, domain := args[1], ""
	stsPort := 0
	for i, a := range args {
		switch {
		case a == "--domain" && i+1 < len(args):
			domain = args[i+1]
		case strings.HasPrefix(a, "--domain="):
			domain = strings.TrimPrefix(a, "--domain=")
		case strings.HasPrefix(a, "--stsPort="):
			stsPort, _ = strconv.Atoi(strings.TrimPrefix(a, "--stsPort="))
		}
	}
	if domain == "" {
		domain = pod.Namespace + ".svc." + constants.DefaultClusterLocalDomain
	}
	// pilot-agent reads the downward API files and the mesh config relative to its working dir.
	podInfo := filepath.Join(workdir, filepath.Dir(constants.PodInfoLabelsPath))
	if err := os.MkdirAll(podInfo, 0o755); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(workdir, constants.PodInfoLabelsPath), downwardAPI(pod.Labels), 0o644); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(filepath.Join(workdir, constants.PodInfoAnnotationsPath), downwardAPI(pod.Annotations), 0o644); err != nil {
		return nil, nil, err
	}
	const meshPath = "./etc/istio/config/mesh"
	if meshFile != nil {
		if err := os.MkdirAll(filepath.Join(workdir, filepath.Dir(meshPath)), 0o755); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(filepath.Join(workdir, meshPath), meshFile, 0o644); err != nil {
			return nil, nil, err
		}
	}
	back, err := os.Getwd()
	if err != nil {
		return nil, nil, err
	}
	if err := os.Chdir(workdir); err != nil {
		return nil, nil, err
	}
	defer os.Chdir(back)

	proxyConfig, err := agentconfig.ConstructProxyConfig(meshPath, constants.ServiceClusterName, env["PROXY_CONFIG"], 0)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy config: %v", err)
	}
	ips := []string{env["INSTANCE_IP"]}
	// istio-agent's Proxy.ServiceNode: TYPE~IP~POD.NAMESPACE~DOMAIN.
	id := strings.Join([]string{proxyType, ips[0], env["POD_NAME"] + "." + env["POD_NAMESPACE"], domain}, "~")
	var pilotSAN []string
	if proxyConfig.ControlPlaneAuthPolicy == meshconfig.AuthenticationPolicy_MUTUAL_TLS {
		pilotSAN = []string{strings.Split(proxyConfig.DiscoveryAddress, ":")[0]}
	}
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	sort.Strings(list)
	node, err := agentbootstrap.GetNodeMetaData(agentbootstrap.MetadataOptions{
		ID:                          id,
		Envs:                        list,
		InstanceIPs:                 ips,
		StsPort:                     stsPort,
		ProxyConfig:                 proxyConfig,
		PilotSubjectAltName:         pilotSAN,
		EnvoyStatusPort:             15021,
		EnvoyPrometheusPort:         15090,
		ExitOnZeroActiveConnections: env["EXIT_ON_ZERO_ACTIVE_CONNECTIONS"] == "true",
	})
	if err != nil {
		return nil, nil, err
	}
	// The bootstrap's node metadata: the typed fields, plus the untyped ISTIO_META_* they lack
	// (pkg/bootstrap/option's marshalMetadata).
	typed, err := json.Marshal(node.Metadata)
	if err != nil {
		return nil, nil, err
	}
	merged := map[string]any{}
	if err := json.Unmarshal(typed, &merged); err != nil {
		return nil, nil, err
	}
	for k, v := range node.RawMetadata {
		if _, ok := merged[k]; !ok {
			merged[k] = v
		}
	}
	metadata, err := structpb.NewStruct(merged)
	if err != nil {
		return nil, nil, err
	}
	return &core.Node{Id: node.ID, Cluster: serviceCluster(node.Metadata), Metadata: metadata, Locality: node.Locality}, differences, nil
}

// serviceCluster is the bootstrap's node cluster (pkg/bootstrap's getServiceCluster) for an
// explicit serviceCluster or the default tracingServiceName, APP_LABEL_AND_NAMESPACE (the
// CANONICAL_NAME_* choices are not used by this mesh).
func serviceCluster(m *model.BootstrapNodeMetadata) string {
	pc := (*meshconfig.ProxyConfig)(m.ProxyConfig)
	if sc, ok := pc.GetClusterName().(*meshconfig.ProxyConfig_ServiceCluster); ok && sc.ServiceCluster != "" && sc.ServiceCluster != constants.ServiceClusterName {
		return sc.ServiceCluster
	}
	if app, ok := kubelabels.GetApp(m.Labels); ok {
		return app + "." + m.Namespace
	}
	if m.WorkloadName != "" {
		return m.WorkloadName + "." + m.Namespace
	}
	return constants.ServiceClusterName + "." + m.Namespace
}
