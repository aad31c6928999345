package main

// A gateway's credentialName secret, which istiod serves on the proxy's ADS stream: mesh-xds
// finds the names the config fetches over ADS (and only those), and writes each secret istiod
// sent as the SDS file the bootstrap reads, and one with no resource for a secret it did not
// send (the twin: the same name unanswered).

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestSecretsServedOverADSAreFetchedAndWritten(t *testing.T) {
	ads := &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
	file := &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_PathConfigSource{PathConfigSource: &core.PathConfigSource{Path: "/x"}}}
	context, err := anypb.New(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "kubernetes://bookshop-tls", SdsConfig: ads}},
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: file}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := anypb.New(&listener.Listener{Name: "0.0.0.0_8443", FilterChains: []*listener.FilterChain{{
		TransportSocket: &core.TransportSocket{Name: "tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: context}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	names, err := adsSecretNames([]*anypb.Any{l})
	if err != nil || !slices.Equal(names, []string{"kubernetes://bookshop-tls"}) {
		t.Fatalf("names fetched over ADS: %q, %v", names, err)
	}
	secret, err := anypb.New(&tlsv3.Secret{Name: "kubernetes://bookshop-tls"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sent      []*anypb.Any
		resources int
	}{{[]*anypb.Any{secret}, 1}, {nil, 0}} {
		dir := t.TempDir()
		if err := writeADSSecrets(&resources{SecretNames: names, Secrets: tc.sent}, dir); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, "kubernetes___bookshop-tls.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct{ Resources []map[string]any }
		if err := json.Unmarshal(data, &doc); err != nil || len(doc.Resources) != tc.resources {
			t.Fatalf("%d sent: the file holds %s (%v)", len(tc.sent), data, err)
		}
	}
}
