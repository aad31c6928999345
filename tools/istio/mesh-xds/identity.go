package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"

	"istio.io/istio/pkg/security"
	"istio.io/istio/security/pkg/credentialfetcher/plugin"
	"istio.io/istio/security/pkg/nodeagent/cache"
	"istio.io/istio/security/pkg/nodeagent/caclient/providers/citadel"
)

// The SDS secret type, and Istio's names for the workload's key and certificate and for its
// trust anchors (pilot/pkg/model: SDSDefaultResourceName, SDSRootResourceName).
const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// identityArgs are what istio-agent knows when it asks istiod's CA for a certificate: where the
// CA is and the name its serving certificate carries, the root that certificate chains to (the
// istio-ca-root-cert ConfigMap), the pod's ServiceAccount token (audience istio-ca), and the
// pod's cluster, trust domain, namespace and service account (they name the CSR's subject).
type identityArgs struct {
	caAddr, caSAN, rootCert, token string
	clusterID, trustDomain         string
	namespace, serviceAccount, out string
	ttl                            time.Duration
}

func (a *identityArgs) register(f *flag.FlagSet) {
	f.StringVar(&a.caAddr, "ca-addr", "", "istiod's CA, host:port (15012)")
	f.StringVar(&a.caSAN, "ca-san", "istiod.istio-system.svc", "the DNS name istiod's serving certificate must carry")
	f.StringVar(&a.rootCert, "root-cert", "", "PEM file: istiod's root (the istio-ca-root-cert ConfigMap's root-cert.pem)")
	f.StringVar(&a.token, "token-file", "", "the pod's ServiceAccount token for audience istio-ca")
	f.StringVar(&a.clusterID, "cluster-id", "Kubernetes", "ISTIO_META_CLUSTER_ID of the pod's proxy")
	f.StringVar(&a.trustDomain, "trust-domain", "cluster.local", "TRUST_DOMAIN of the pod's proxy")
}

// identityMain is `mesh-xds identity`: one workload's key and certificate from istiod's CA,
// written as the SDS files the bootstraps read.
func identityMain(argv []string) error {
	var a identityArgs
	f := flag.NewFlagSet("mesh-xds identity", flag.ContinueOnError)
	a.register(f)
	f.StringVar(&a.namespace, "namespace", "", "POD_NAMESPACE of the pod")
	f.StringVar(&a.serviceAccount, "service-account", "", "SERVICE_ACCOUNT of the pod")
	f.StringVar(&a.out, "out", "", "directory for default.yaml, ROOTCA.yaml and the PEM files")
	f.DurationVar(&a.ttl, "ttl", 24*time.Hour, "the certificate lifetime asked for (SECRET_TTL)")
	if err := f.Parse(argv); err != nil {
		return err
	}
	for name, v := range map[string]string{"ca-addr": a.caAddr, "root-cert": a.rootCert, "token-file": a.token,
		"namespace": a.namespace, "service-account": a.serviceAccount, "out": a.out} {
		if v == "" {
			return fmt.Errorf("identity: no --%s", name)
		}
	}
	if err := os.MkdirAll(a.out, 0o755); err != nil {
		return err
	}
	// Istio's packages log a lot: into the secrets' directory, not stdout.
	if err := logTo(filepath.Join(a.out, "istio-agent.log")); err != nil {
		return err
	}
	return certify(a)
}

// certify is what istio-agent's SDS server does for the resources `default` and `ROOTCA`:
// its secret manager generates a key and CSR and has istiod's CA sign it over gRPC (TLS
// verified against the root, the token as bearer, the cluster id as metadata); the CA decides
// the identity from the token, whatever the CSR asks for.
func certify(a identityArgs) error {
	opts := &security.Options{
		CAEndpoint:        a.caAddr,
		CAEndpointSAN:     a.caSAN,
		ClusterID:         a.clusterID,
		TrustDomain:       a.trustDomain,
		WorkloadNamespace: a.namespace,
		ServiceAccount:    a.serviceAccount,
		CredFetcher:       plugin.CreateTokenPlugin(a.token),
		// istio-agent's defaults (pilot-agent's options): 2048-bit RSA unless ECC is asked for.
		WorkloadRSAKeySize:             2048,
		ECCCurve:                       "P256",
		SecretTTL:                      a.ttl,
		SecretRotationGracePeriodRatio: 0.5,
		OutputKeyCertToDir:             a.out,
	}
	client, err := citadel.NewCitadelClient(opts, &citadel.TLSOptions{RootCert: a.rootCert})
	if err != nil {
		return err
	}
	manager, err := cache.NewSecretManagerClient(client, opts)
	if err != nil {
		return err
	}
	defer manager.Close()
	workload, err := manager.GenerateSecret(security.WorkloadKeyCertResourceName)
	if err != nil {
		return fmt.Errorf("istiod's CA: %v", err)
	}
	root, err := manager.GenerateSecret(security.RootCertReqResourceName)
	if err != nil {
		return fmt.Errorf("istiod's CA (root): %v", err)
	}
	secrets := map[string]map[string]any{
		security.WorkloadKeyCertResourceName: {"tls_certificate": map[string]any{
			"certificate_chain": map[string]any{"inline_string": string(workload.CertificateChain)},
			"private_key":       map[string]any{"inline_string": string(workload.PrivateKey)},
		}},
		security.RootCertReqResourceName: {"validation_context": map[string]any{
			"trusted_ca": map[string]any{"inline_string": string(root.RootCert)},
		}},
	}
	for name, secret := range secrets {
		resource := map[string]any{"@type": secretType, "name": name}
		for k, v := range secret {
			resource[k] = v
		}
		data, err := yaml.Marshal(map[string]any{"resources": []any{resource}})
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(a.out, name+".yaml"), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}
