// mesh-xds turns Kubernetes and Istio objects into the Envoy configuration each pod's proxy
// would receive, with Istio's own translation code, and into a bootstrap that upstream Envoy
// runs without a control plane.
//
// The translation is istiod's: the in-memory discovery server Istio's own tests use
// (istio.io/istio/pilot/test/xds), fed the objects as a cluster's API server would hold them
// (plus the EndpointSlices Kubernetes would make from the Services and Pods), is asked over
// ADS for each pod's clusters, endpoints, listeners and routes, with the node id and metadata
// Istio's sidecar injector and pilot-agent give that pod's proxy.
//
// Built from the istio.io/istio module that tools/istio/go.mod pins (cargo xtask test builds it):
//
//	cd tools/istio && go build -o <dir>/mesh-xds ./mesh-xds
//
// Usage: mesh-xds --in FILE.yaml [--in FILE.yaml]... --mesh-config ISTIO-OPERATOR.yaml --sds-dir DIR --out DIR
//
// Two more modes ask a real istiod instead, as each pod's istio-agent would:
//
//	mesh-xds identity --ca-addr ADDR --root-cert PEM --token-file FILE --namespace NS --service-account SA --out DIR
//	  one workload's key and certificate from istiod's CA (identity.go), as SDS files in DIR
//	mesh-xds istiod --objects PODS-AND-CONFIGMAPS.json --discovery-addr ADDR --token-dir DIR --sds-dir DIR --out DIR
//	  every pod's proxy configuration from istiod over ADS (istiod.go), written as below
//
// For each Pod with a status.podIP (label istio=ingressgateway: a gateway, else a sidecar)
// it writes into --out:
//
//	<namespace>.<pod>.xds.json          what Istio generated, as protojson with @type (of the
//	                                    secrets served over ADS, only the names it sent)
//	<namespace>.<pod>.bootstrap.json    a static bootstrap for upstream Envoy (no admin block)
//	<namespace>.<pod>.differences.txt   every change from the former to the latter, and why
//	istio.log                           the warnings and errors of Istio's code
//	ignored.txt                         the Kubernetes objects not given to Istio (CRDs, RBAC...), and why
//
// The bootstrap of a pod reads each secret Istio's config names (`default`: the workload's
// certificate and key, `ROOTCA`: the trust anchors) from --sds-dir/<namespace>.<pod>/<name>.yaml,
// a file-based SDS resource (DiscoveryResponse-shaped YAML or JSON with one Secret). A secret
// the config says to fetch over ADS (a gateway's credentialName, `kubernetes://NAME`) mesh-xds
// asks istiod for on the same stream and writes there itself (`kubernetes___NAME.yaml`).
//
// Exits 1 with one line on stderr on any error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	corev1 "k8s.io/api/core/v1"

	xdsfake "istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/log"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	// The modes against a real istiod (identity.go, istiod.go).
	if len(os.Args) > 1 {
		modes := map[string]func([]string) error{"identity": identityMain, "istiod": istiodMain}
		if mode, ok := modes[os.Args[1]]; ok {
			if err := mode(os.Args[2:]); err != nil {
				fail(err)
			}
			return
		}
	}
	var in files
	flag.Var(&in, "in", "multi-document YAML of Kubernetes and Istio objects (repeatable)")
	meshConfig := flag.String("mesh-config", "", "an IstioOperator whose spec.meshConfig (and spec.tag, the proxies' version) apply")
	sdsDir := flag.String("sds-dir", "", "directory the bootstraps read SDS secrets from: <dir>/<namespace>.<pod>/<secret name>.yaml")
	out := flag.String("out", "", "directory to write the configurations into")
	timeout := flag.Duration("timeout", 30*time.Second, "longest wait for the discovery server, per proxy")
	flag.Parse()
	switch {
	case len(in) == 0:
		fail(fmt.Errorf("no --in file"))
	case *meshConfig == "":
		fail(fmt.Errorf("no --mesh-config"))
	case *sdsDir == "":
		fail(fmt.Errorf("no --sds-dir"))
	case *out == "":
		fail(fmt.Errorf("no --out"))
	case flag.NArg() > 0:
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	// Istio's fakes panic on what they cannot hold; say so in one line too.
	defer func() {
		if r := recover(); r != nil {
			fail(fmt.Errorf("Istio's discovery server failed: %v", r))
		}
	}()
	if err := run(in, *meshConfig, *sdsDir, *out, *timeout); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mesh-xds:", strings.ReplaceAll(err.Error(), "\n", " "))
	os.Exit(1)
}

// Istio's packages log to stdout, and a lot: their warnings and errors go to a file beside the
// output (the fake API server's Gateway API CRDs alone draw a few harmless errors), so that
// stderr carries only mesh-xds's own one-line error.
func logTo(path string) error {
	options := log.DefaultOptions()
	options.OutputPaths = []string{path}
	options.ErrorOutputPaths = []string{path}
	options.SetDefaultOutputLevel(log.DefaultScopeName, log.WarnLevel)
	for _, scope := range log.Scopes() {
		scope.SetOutputLevel(log.WarnLevel)
	}
	return log.Configure(options)
}

func run(in []string, meshConfigFile, sdsDir, out string, timeout time.Duration) error {
	sdsDir, err := filepath.Abs(sdsDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := logTo(filepath.Join(out, "istio.log")); err != nil {
		return err
	}
	m, version, err := readMeshConfig(meshConfigFile)
	if err != nil {
		return err
	}
	input, err := readInputs(in)
	if err != nil {
		return err
	}
	ignored := "# Objects of the --in files mesh-xds did not give to Istio's discovery server, and why\n" + strings.Join(input.ignored, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(out, "ignored.txt"), []byte(ignored), 0o644); err != nil {
		return err
	}
	injected := map[string][]string{}
	var proxies []*corev1.Pod
	for _, pod := range input.pods {
		if input.proxied(pod) {
			injected[pod.Namespace+"/"+pod.Name] = inject(pod, input.deployments)
			proxies = append(proxies, pod)
		}
	}
	if len(proxies) == 0 {
		return fmt.Errorf("no pod runs a proxy: none is a gateway (label istio=ingressgateway) or in a namespace labelled istio-injection=enabled")
	}
	server := xdsfake.NewFakeDiscoveryServer(failer{}, xdsfake.FakeOptions{
		Configs:           input.configs,
		KubernetesObjects: input.objects,
		MeshConfig:        m,
	})
	listener, ok := server.Listener.(*bufconn.Listener)
	if !ok {
		return fmt.Errorf("the discovery server did not listen in memory")
	}
	conn, err := grpc.NewClient("passthrough:///istiod",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return listener.Dial() }))
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, pod := range proxies {
		n, err := node(pod, input.deployments, m, version)
		if err != nil {
			return err
		}
		got, err := fetch(conn, n, timeout)
		if err != nil {
			return fmt.Errorf("Pod %s/%s: %v", pod.Namespace, pod.Name, err)
		}
		if err := writeProxy(pod, n, got, sdsDir, out, injected[pod.Namespace+"/"+pod.Name]); err != nil {
			return err
		}
	}
	return nil
}

// writeProxy writes what one proxy received (.xds.json), the static bootstrap made of it, whose
// secrets are read from the pod's own directory of sdsDir, and the differences between the two,
// after `notes` (how the node differs from the pod's own proxy's).
func writeProxy(pod *corev1.Pod, n *core.Node, got *resources, sdsDir, out string, notes []string) error {
	if len(got.Listeners) == 0 {
		return fmt.Errorf("Pod %s/%s: Istio generated no listener for it", pod.Namespace, pod.Name)
	}
	base := filepath.Join(out, pod.Namespace+"."+pod.Name)
	nodeJSON, err := jsonOf(n)
	if err != nil {
		return err
	}
	if err := writeXDS(base+".xds.json", nodeJSON, got); err != nil {
		return err
	}
	// Each proxy has its own identity: its own directory of secrets.
	boot, differences, err := buildBootstrap(nodeJSON, got, filepath.Join(sdsDir, pod.Namespace+"."+pod.Name))
	if err != nil {
		return fmt.Errorf("Pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	if err := writeJSON(base+".bootstrap.json", boot); err != nil {
		return err
	}
	if err := writeADSSecrets(got, filepath.Join(sdsDir, pod.Namespace+"."+pod.Name)); err != nil {
		return err
	}
	text := "# How " + filepath.Base(base) + ".bootstrap.json differs from what Istio generated (" + filepath.Base(base) + ".xds.json)\n"
	for _, line := range append(notes, differences...) {
		text += line + "\n"
	}
	return os.WriteFile(base+".differences.txt", []byte(text), 0o644)
}

func writeXDS(path string, nodeJSON map[string]any, got *resources) error {
	doc := map[string]any{"node": nodeJSON}
	var err error
	if doc["clusters"], err = jsonList(got.Clusters); err != nil {
		return err
	}
	if doc["endpoints"], err = jsonList(got.Endpoints); err != nil {
		return err
	}
	if doc["listeners"], err = jsonList(got.Listeners); err != nil {
		return err
	}
	if doc["routes"], err = jsonList(got.Routes); err != nil {
		return err
	}
	// Of the secrets served over ADS, only which ones istiod sent: no key in this file.
	if len(got.SecretNames) > 0 {
		sent := []string{}
		for _, s := range got.Secrets {
			sent = append(sent, secretName(s))
		}
		sort.Strings(sent)
		doc["secrets"] = sent
	}
	return writeJSON(path, doc)
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// failer is the test.Failer Istio's fake discovery server reports to: any failure ends the
// program with its message.
type failer struct{}

func (failer) Fail()             { fail(fmt.Errorf("the discovery server failed")) }
func (failer) FailNow()          { fail(fmt.Errorf("the discovery server failed")) }
func (failer) Fatal(args ...any) { fail(fmt.Errorf("discovery server: %s", fmt.Sprint(args...))) }
func (failer) Fatalf(format string, args ...any) {
	fail(fmt.Errorf("discovery server: "+format, args...))
}
func (failer) Log(...any)          {}
func (failer) Logf(string, ...any) {}
func (failer) Helper()             {}
func (failer) Cleanup(func())      {}
func (failer) Skip(args ...any) {
	fail(fmt.Errorf("discovery server skipped: %s", fmt.Sprint(args...)))
}
func (failer) TempDir() string {
	dir, err := os.MkdirTemp("", "mesh-xds")
	if err != nil {
		fail(err)
	}
	return dir
}
