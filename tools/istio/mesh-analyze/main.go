// mesh-analyze runs Istio's analyzers, the same ones `istioctl analyze` runs, on manifest
// files, including the kinds a live cluster would supply.
//
// `istioctl analyze --use-kube=false` reads Services, Pods, Namespaces, Nodes and Secrets from
// files but drops them on purpose (they are "runtime" resources it expects from a cluster:
// pkg/config/analysis/legacy/util/kuberesource/resources.go), so every analyzer that needs one of
// them is skipped: which workload a policy selects, whether a route's host exists, how a port
// is named. With no cluster at hand, this program feeds the files in as the cluster would (the
// library's AddTestReaderKubeSource), so those analyzers run too. Everything else is istioctl's
// analyze: all analyzers, the mesh config from a file, --suppress, output as istioctl's JSON.
//
// Built from the istio.io/istio module that tools/istio/go.mod pins (cargo xtask test builds it):
//
//	cd tools/istio && go build -o <dir>/mesh-analyze ./mesh-analyze
//
// Usage: mesh-analyze --mesh-config MESH.yaml [--suppress CODE=RESOURCE]... FILE...
// Prints the messages (Info and above) as JSON; exits 0 even when there are some (the caller
// judges them), 2 when the files cannot be read or analyzed.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"istio.io/istio/istioctl/pkg/util/formatting"
	"istio.io/istio/pkg/config/analysis/analyzers"
	"istio.io/istio/pkg/config/analysis/local"
	"istio.io/istio/pkg/config/resource"
	"istio.io/istio/pkg/log"
)

type suppressions []string

func (s *suppressions) String() string     { return strings.Join(*s, ",") }
func (s *suppressions) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	meshConfig := flag.String("mesh-config", "", "mesh config file (the `mesh` key of the istio ConfigMap)")
	istioNamespace := flag.String("istio-namespace", "istio-system", "Istio's namespace")
	var suppress suppressions
	flag.Var(&suppress, "suppress", "CODE=RESOURCE to suppress, as istioctl analyze --suppress (repeatable)")
	flag.Parse()
	// Istio's packages log to stdout; keep stdout for the messages.
	options := log.DefaultOptions()
	options.OutputPaths = []string{"stderr"}
	options.ErrorOutputPaths = []string{"stderr"}
	options.SetDefaultOutputLevel(log.DefaultScopeName, log.WarnLevel)
	for _, scope := range log.Scopes() {
		scope.SetOutputLevel(log.WarnLevel)
	}
	if err := log.Configure(options); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-analyze:", err)
		os.Exit(2)
	}
	if err := run(*meshConfig, *istioNamespace, suppress, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-analyze:", err)
		os.Exit(2)
	}
}

func run(meshConfig, istioNamespace string, suppress []string, files []string) error {
	if len(files) == 0 {
		return fmt.Errorf("no files to analyze")
	}
	// Every namespace ("" keeps the messages of all of them, as istioctl analyze --all-namespaces).
	sa := local.NewIstiodAnalyzer(analyzers.AllCombined(), "", resource.Namespace(istioNamespace), nil)
	var list []local.AnalysisSuppression
	for _, s := range suppress {
		code, name, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("%q is not CODE=RESOURCE", s)
		}
		list = append(list, local.AnalysisSuppression{Code: code, ResourceName: name})
	}
	sa.SetSuppressions(list)
	if meshConfig != "" {
		if err := sa.AddFileKubeMeshConfig(meshConfig); err != nil {
			return fmt.Errorf("mesh config %s: %v", meshConfig, err)
		}
	}
	var readers []local.ReaderSource
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		readers = append(readers, local.ReaderSource{Name: name, Reader: f})
	}
	if err := sa.AddTestReaderKubeSource(readers); err != nil {
		return fmt.Errorf("reading the files: %v", err)
	}
	cancel := make(chan struct{})
	result, err := sa.Analyze(cancel)
	if err != nil {
		return err
	}
	out, err := formatting.Print(*result.Messages.SetDocRef("istioctl-analyze"), formatting.JSONFormat, false)
	if err != nil {
		return err
	}
	fmt.Println(out)
	return nil
}
