package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"

	istiogrpc "istio.io/istio/pilot/pkg/grpc"
	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/credentialfetcher/plugin"
	"istio.io/istio/security/pkg/nodeagent/caclient"
)

// Where the injected pod mounts what pilot-agent reads: istiod's root (the istio-ca-root-cert
// ConfigMap) and, for the gateway, the mesh config.
const (
	rootCertConfigMap = "istio-ca-root-cert"
	rootCertKey       = "root-cert.pem"
	meshConfigMount   = "/etc/istio/config"
)

// istiodMain is `mesh-xds istiod`: for every pod of --objects that runs an istio-proxy, the
// configuration the real istiod sends that proxy over ADS, asked for as pilot-agent's xDS proxy
// does (TLS to 15012 verified against the root of the pod's istio-ca-root-cert ConfigMap, the
// pod's istio-ca token as bearer, the node pilot-agent builds from the injected pod), written
// as the static bootstrap and differences the in-memory mode writes.
func istiodMain(argv []string) error {
	f := flag.NewFlagSet("mesh-xds istiod", flag.ContinueOnError)
	objects := f.String("objects", "", "JSON List of the cluster's Pods and ConfigMaps (`kubectl get pods,configmaps -A -o json`)")
	addr := f.String("discovery-addr", "", "istiod's xDS address, host:port (15012)")
	san := f.String("istiod-san", "istiod.istio-system.svc", "the DNS name istiod's serving certificate must carry")
	tokens := f.String("token-dir", "", "directory of the pods' istio-ca tokens: <namespace>.<pod>.token")
	sdsDir := f.String("sds-dir", "", "directory the bootstraps read SDS secrets from: <dir>/<namespace>.<pod>/<secret name>.yaml")
	out := f.String("out", "", "directory to write the configurations into")
	timeout := f.Duration("timeout", 30*time.Second, "longest wait for istiod, per proxy")
	if err := f.Parse(argv); err != nil {
		return err
	}
	for name, v := range map[string]string{"objects": *objects, "discovery-addr": *addr, "token-dir": *tokens, "sds-dir": *sdsDir, "out": *out} {
		if v == "" {
			return fmt.Errorf("istiod: no --%s", name)
		}
	}
	abs, err := filepath.Abs(*sdsDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := logTo(filepath.Join(*out, "istio.log")); err != nil {
		return err
	}
	pods, configMaps, err := readObjects(*objects)
	if err != nil {
		return err
	}
	if len(pods) == 0 {
		return fmt.Errorf("no pod of %s runs an istio-proxy", *objects)
	}
	for _, pod := range pods {
		if err := fromIstiod(pod, configMaps, *addr, *san, *tokens, abs, *out, *timeout); err != nil {
			return fmt.Errorf("Pod %s/%s: %v", pod.Namespace, pod.Name, err)
		}
	}
	return nil
}

func fromIstiod(pod *corev1.Pod, configMaps map[string]*corev1.ConfigMap, addr, san, tokens, sdsDir, out string, timeout time.Duration) error {
	base := pod.Namespace + "." + pod.Name
	workdir := filepath.Join(out, base+".agent")
	root, ok := configMaps[pod.Namespace+"/"+rootCertConfigMap]
	if !ok || root.Data[rootCertKey] == "" {
		return fmt.Errorf("no ConfigMap %s with %s in its namespace", rootCertConfigMap, rootCertKey)
	}
	n, notes, err := agentNode(pod, meshFile(pod, configMaps), workdir)
	if err != nil {
		return err
	}
	rootPath := filepath.Join(workdir, rootCertKey)
	if err := os.WriteFile(rootPath, []byte(root.Data[rootCertKey]), 0o644); err != nil {
		return err
	}
	// pilot-agent's xDS proxy: TLS verified against istiod's root under istiod's name, no client
	// certificate (PROV_CERT and FILE_MOUNTED_CERTS unset), the token on every call.
	dial, err := istiogrpc.ClientOptions(nil, &istiogrpc.TLSOptions{RootCert: rootPath, ServerAddress: addr, SAN: san})
	if err != nil {
		return err
	}
	token := &security.Options{CredFetcher: plugin.CreateTokenPlugin(filepath.Join(tokens, base+".token"))}
	conn, err := grpc.NewClient(addr, append(dial, grpc.WithPerRPCCredentials(caclient.NewDefaultTokenProvider(token)))...)
	if err != nil {
		return err
	}
	defer conn.Close()
	got, err := fetch(conn, n, timeout)
	if err != nil {
		return err
	}
	notes = append([]string{"node: built by pilot-agent's code (pkg/bootstrap) from the injected pod's istio-proxy container, labels and annotations, and sent to istiod " + addr}, notes...)
	return writeProxy(pod, n, got, sdsDir, out, notes)
}

// meshFile is the `mesh` key of the ConfigMap the pod's istio-proxy mounts at
// /etc/istio/config (the gateway's), or nil (sidecars get theirs in PROXY_CONFIG).
func meshFile(pod *corev1.Pod, configMaps map[string]*corev1.ConfigMap) []byte {
	c := proxyContainer(pod)
	for _, m := range c.VolumeMounts {
		if m.MountPath != meshConfigMount {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil {
				if cm, ok := configMaps[pod.Namespace+"/"+v.ConfigMap.Name]; ok {
					return []byte(cm.Data["mesh"])
				}
			}
		}
	}
	return nil
}

// readObjects reads a List of Pods and ConfigMaps: the pods that run an istio-proxy (sorted),
// and the ConfigMaps by namespace/name.
func readObjects(path string) ([]*corev1.Pod, map[string]*corev1.ConfigMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", path, err)
	}
	var pods []*corev1.Pod
	configMaps := map[string]*corev1.ConfigMap{}
	for _, item := range list.Items {
		var kind struct{ Kind string }
		if err := json.Unmarshal(item, &kind); err != nil {
			return nil, nil, err
		}
		switch kind.Kind {
		case "Pod":
			pod := &corev1.Pod{}
			if err := json.Unmarshal(item, pod); err != nil {
				return nil, nil, err
			}
			// A pod on its way out is not what a proxy would be configured as.
			if proxyContainer(pod) != nil && pod.Status.PodIP != "" && pod.DeletionTimestamp == nil {
				pods = append(pods, pod)
			}
		case "ConfigMap":
			cm := &corev1.ConfigMap{}
			if err := json.Unmarshal(item, cm); err != nil {
				return nil, nil, err
			}
			configMaps[cm.Namespace+"/"+cm.Name] = cm
		}
	}
	sort.Slice(pods, func(i, j int) bool {
		return pods[i].Namespace+"/"+pods[i].Name < pods[j].Namespace+"/"+pods[j].Name
	})
	return pods, configMaps, nil
}
