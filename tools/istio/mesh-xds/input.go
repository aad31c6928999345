package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubeyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	meshconfig "istio.io/api/mesh/v1alpha1"
	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/mesh"
	kubelib "istio.io/istio/pkg/kube"
)

// inputs is everything read from the --in files.
type inputs struct {
	// Istio objects (networking, security, telemetry, extensions .istio.io), validated.
	configs []config.Config
	// Kubernetes objects as a cluster's API server would hold them, plus the EndpointSlices
	// its endpoint controller would make.
	objects     []runtime.Object
	pods        []*corev1.Pod
	services    []*corev1.Service
	deployments []*deploymentRef
	namespaces  []*corev1.Namespace
	seen        map[string]bool
	// Kubernetes objects not given to the discovery server, with why (written to ignored.txt).
	ignored []string
}

// proxied says whether a pod runs an Istio proxy: a gateway (label istio=ingressgateway), or a
// pod the sidecar injector's default webhook selects (its namespace labelled
// istio-injection=enabled, the pod not opting out with sidecar.istio.io/inject=false). Other
// pods (e.g. the observability namespace's) are endpoints only.
func (in *inputs) proxied(pod *corev1.Pod) bool {
	if isGateway(pod) {
		return true
	}
	if pod.Labels["sidecar.istio.io/inject"] == "false" {
		return false
	}
	for _, ns := range in.namespaces {
		if ns.Name == pod.Namespace {
			return ns.Labels["istio-injection"] == "enabled"
		}
	}
	return false
}

// deploymentRef is what the injector reads of a pod's Deployment (its workload name and owner).
type deploymentRef struct {
	namespace, name string
	selector        labels.Selector
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

func readInputs(files []string) (*inputs, error) {
	in := &inputs{seen: map[string]bool{}}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		reader := kubeyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for index := 0; ; index++ {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %v", file, index, err)
			}
			if err := in.add(doc); err != nil {
				return nil, fmt.Errorf("%s: document %d: %v", file, index, err)
			}
		}
	}
	if len(in.pods) == 0 {
		return nil, fmt.Errorf("no Pod with status.podIP in %s: there is no proxy to generate for", strings.Join(files, ", "))
	}
	slices, err := endpointSlices(in.services, in.pods)
	if err != nil {
		return nil, err
	}
	in.objects = append(in.objects, slices...)
	return in, nil
}

func (in *inputs) add(doc []byte) error {
	var meta typeMeta
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return fmt.Errorf("not YAML: %v", err)
	}
	if meta.Kind == "" && meta.APIVersion == "" {
		// Empty document (comments only).
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			return nil
		}
		return fmt.Errorf("no apiVersion/kind")
	}
	group, _, _ := strings.Cut(meta.APIVersion, "/")
	if strings.HasSuffix(group, ".istio.io") {
		configs, others, err := crd.ParseInputs(string(doc))
		if err != nil {
			return fmt.Errorf("%s: %v", meta.Kind, err)
		}
		if len(others) > 0 || len(configs) != 1 {
			return fmt.Errorf("unknown kind %s %s", meta.APIVersion, meta.Kind)
		}
		c := configs[0]
		if c.Namespace == "" {
			return fmt.Errorf("%s %s has no metadata.namespace", meta.Kind, c.Name)
		}
		key := meta.Kind + " " + c.Namespace + "/" + c.Name
		if in.seen[key] {
			return fmt.Errorf("%s is given twice", key)
		}
		in.seen[key] = true
		in.configs = append(in.configs, c)
		return nil
	}
	obj, gvk, err := kubelib.IstioCodec.UniversalDeserializer().Decode(doc, nil, nil)
	if err != nil {
		return fmt.Errorf("unknown kind %s %s: %v", meta.APIVersion, meta.Kind, err)
	}
	// The fake API server panics on a duplicate; say which one instead.
	object, ok := obj.(metav1.Object)
	if !ok {
		return fmt.Errorf("%s %s is not an object with metadata", meta.APIVersion, meta.Kind)
	}
	key := gvk.Kind + " " + object.GetNamespace() + "/" + object.GetName()
	if in.seen[key] {
		return fmt.Errorf("%s is given twice", key)
	}
	in.seen[key] = true
	switch o := obj.(type) {
	case *corev1.Pod:
		if o.Namespace == "" {
			return fmt.Errorf("Pod %s has no metadata.namespace", o.Name)
		}
		if o.Status.PodIP == "" {
			return fmt.Errorf("Pod %s/%s has no status.podIP", o.Namespace, o.Name)
		}
		in.pods = append(in.pods, o)
	case *corev1.Service:
		in.services = append(in.services, o)
	case *corev1.Namespace:
		in.namespaces = append(in.namespaces, o)
	case *discoveryv1.EndpointSlice:
		return fmt.Errorf("EndpointSlice %s: mesh-xds makes them from the Services and Pods", o.Name)
	case *appsv1.Deployment:
		selector, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
		if err != nil {
			return fmt.Errorf("Deployment %s/%s: %v", o.Namespace, o.Name, err)
		}
		// Pods are given explicitly: a Deployment only names its pods' workload.
		in.deployments = append(in.deployments, &deploymentRef{namespace: o.Namespace, name: o.Name, selector: selector})
		in.ignored = append(in.ignored, key+": its pods are given as Pods (it names their workload)")
		return nil
	case *corev1.Node, *corev1.Secret, *corev1.ConfigMap, *corev1.ServiceAccount:
	default:
		// istiod reads none of these to generate a proxy's config (CRDs, RBAC, webhooks,
		// autoscalers, NetworkPolicies...), and the fake API server cannot hold some of them.
		in.ignored = append(in.ignored, key+": istiod does not read it for proxy config")
		return nil
	}
	in.objects = append(in.objects, obj)
	return nil
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, t...)
		}
	}
	return out
}

// endpointSlices makes what Kubernetes' EndpointSlice controller would: for each Service with
// a selector, its ready Pods' IPs with the Service's target ports resolved against the Pods'
// container ports.
func endpointSlices(services []*corev1.Service, pods []*corev1.Pod) ([]runtime.Object, error) {
	var out []runtime.Object
	for _, svc := range services {
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		selector := labels.SelectorFromSet(svc.Spec.Selector)
		var members []*corev1.Pod
		for _, pod := range pods {
			if pod.Namespace == svc.Namespace && selector.Matches(labels.Set(pod.Labels)) {
				members = append(members, pod)
			}
		}
		sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
		// One slice per distinct resolved port set (named ports may differ between pods).
		for index, pod := range members {
			var ports []discoveryv1.EndpointPort
			for _, sp := range svc.Spec.Ports {
				number, err := targetPort(sp.TargetPort, sp.Port, pod)
				if err != nil {
					return nil, fmt.Errorf("Service %s/%s port %s: %v", svc.Namespace, svc.Name, sp.Name, err)
				}
				ports = append(ports, discoveryv1.EndpointPort{
					Name:        ptr(sp.Name),
					Port:        ptr(number),
					Protocol:    ptr(orDefault(sp.Protocol, corev1.ProtocolTCP)),
					AppProtocol: sp.AppProtocol,
				})
			}
			out = append(out, &discoveryv1.EndpointSlice{
				TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
				ObjectMeta: metav1.ObjectMeta{
					Name:      fmt.Sprintf("%s-%d", svc.Name, index),
					Namespace: svc.Namespace,
					Labels: map[string]string{
						discoveryv1.LabelServiceName: svc.Name,
						discoveryv1.LabelManagedBy:   "endpointslice-controller.k8s.io",
					},
				},
				AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints: []discoveryv1.Endpoint{{
					Addresses:  []string{pod.Status.PodIP},
					Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
					TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name},
					NodeName:   nonEmpty(pod.Spec.NodeName),
				}},
				Ports: ports,
			})
		}
	}
	return out, nil
}

func targetPort(target intstr.IntOrString, port int32, pod *corev1.Pod) (int32, error) {
	switch {
	case target.Type == intstr.Int && target.IntVal == 0:
		return port, nil
	case target.Type == intstr.Int:
		return target.IntVal, nil
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == target.StrVal {
				return cp.ContainerPort, nil
			}
		}
	}
	return 0, fmt.Errorf("targetPort %q is not a container port name of Pod %s/%s", target.StrVal, pod.Namespace, pod.Name)
}

// readMeshConfig reads an IstioOperator's spec.meshConfig with Istio's defaults under it, as
// the installed istiod would see it, and the proxies' version (spec.tag).
func readMeshConfig(file string) (*meshconfig.MeshConfig, string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, "", err
	}
	var operator struct {
		Kind string `json:"kind"`
		Spec struct {
			Tag        any            `json:"tag"`
			MeshConfig map[string]any `json:"meshConfig"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &operator); err != nil {
		return nil, "", fmt.Errorf("%s: %v", file, err)
	}
	if operator.Kind != "IstioOperator" {
		return nil, "", fmt.Errorf("%s: kind %q, expected IstioOperator", file, operator.Kind)
	}
	tag, ok := operator.Spec.Tag.(string)
	if !ok || tag == "" {
		return nil, "", fmt.Errorf("%s: spec.tag (the proxies' Istio version) is not set", file)
	}
	meshYAML, err := yaml.Marshal(operator.Spec.MeshConfig)
	if err != nil {
		return nil, "", err
	}
	m, err := mesh.ApplyMeshConfigDefaults(string(meshYAML))
	if err != nil {
		return nil, "", fmt.Errorf("%s: spec.meshConfig: %v", file, err)
	}
	return m, tag, nil
}

func ptr[T any](v T) *T { return &v }

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func nonEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
