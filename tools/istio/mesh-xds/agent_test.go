package main

// The node `mesh-xds istiod` presents for a pod is the one pilot-agent builds inside it:
// testdata/injected-marketplace.json is the marketplace pod as the local control plane's API
// server held it after istiod's injector (tests/cluster), with kwok's pod IP.

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func injectedMarketplace(t *testing.T) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile("testdata/injected-marketplace.json")
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(data, pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func TestTheNodeIsWhatPilotAgentBuildsFromTheInjectedPod(t *testing.T) {
	pod := injectedMarketplace(t)
	n, _, err := agentNode(pod, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if want := "sidecar~" + pod.Status.PodIP + "~" + pod.Name + ".bookshop~bookshop.svc.cluster.local"; n.Id != want {
		t.Errorf("id %q, want %q", n.Id, want)
	}
	if n.Cluster != "marketplace.bookshop" {
		t.Errorf("cluster %q", n.Cluster)
	}
	meta := n.Metadata.AsMap()
	for key, want := range map[string]any{
		"NAMESPACE": "bookshop", "SERVICE_ACCOUNT": "marketplace", "CLUSTER_ID": "Kubernetes",
		"WORKLOAD_NAME": "marketplace", "INTERCEPTION_MODE": "REDIRECT", "ISTIO_VERSION": "1.31.4",
		"NODE_NAME": pod.Spec.NodeName, "APP_CONTAINERS": "marketplace",
		// The annotation's proxyMetadata, which the injector merged into PROXY_CONFIG.
		"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "true",
	} {
		if meta[key] != want {
			t.Errorf("metadata %s = %v, want %v", key, meta[key], want)
		}
	}
	if ips, _ := meta["INSTANCE_IPS"].(string); ips != pod.Status.PodIP {
		t.Errorf("INSTANCE_IPS %v", meta["INSTANCE_IPS"])
	}
	// The labels as the downward API file gives them, without pod-template-hash.
	labels, _ := meta["LABELS"].(map[string]any)
	if labels["app.kubernetes.io/name"] != "marketplace" || labels["pod-template-hash"] != nil {
		t.Errorf("LABELS %v", labels)
	}
	proxyConfig, _ := meta["PROXY_CONFIG"].(map[string]any)
	if proxyConfig["holdApplicationUntilProxyStarts"] != true {
		t.Errorf("PROXY_CONFIG %v", proxyConfig)
	}
}

// The twins: the labels are read from the pod (another app label, another service cluster),
// and a container that is not pilot-agent's `proxy TYPE` is refused.
func TestTheNodeFollowsThePodAndRefusesWhatIsNotAProxy(t *testing.T) {
	pod := injectedMarketplace(t)
	pod.Labels["app.kubernetes.io/name"] = "not-the-marketplace"
	n, _, err := agentNode(pod, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if n.Cluster != "not-the-marketplace.bookshop" {
		t.Errorf("cluster %q did not follow the pod's labels", n.Cluster)
	}
	proxy := proxyContainer(pod)
	proxy.Args = []string{"wait"}
	if _, _, err := agentNode(pod, nil, t.TempDir()); err == nil || !strings.Contains(err.Error(), "proxy TYPE") {
		t.Errorf("a container that is not a proxy gave %v", err)
	}
	pod.Spec.InitContainers = nil
	if _, _, err := agentNode(pod, nil, t.TempDir()); err == nil {
		t.Error("a pod without istio-proxy gave a node")
	}
}
