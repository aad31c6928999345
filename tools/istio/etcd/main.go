// Command etcd is a single-member etcd for the local control plane (tests/cluster): the
// embedded server of go.etcd.io/etcd/server/v3, at the version k8s.io/kubernetes requires,
// so the API server talks to the etcd it is released against.
package main

import (
	"flag"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dir := flag.String("data-dir", "", "where the member keeps its data")
	client := flag.String("client-url", "http://127.0.0.1:2379", "the URL clients reach")
	peer := flag.String("peer-url", "http://127.0.0.1:2380", "the URL peers reach (no peers join)")
	flag.Parse()

	cfg := embed.NewConfig()
	cfg.Dir = *dir
	cfg.LogLevel = "warn"
	// A throwaway cluster: losing data on a power cut costs nothing, and fsync is most of
	// etcd's write latency on a shared disk.
	cfg.UnsafeNoFsync = true
	clientURL, peerURL := mustParse(*client), mustParse(*peer)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	server, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	<-server.Server.ReadyNotify()
	log.Printf("etcd serving on %s", clientURL.String())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-stop:
	case err := <-server.Err():
		log.Fatal(err)
	}
}

func mustParse(raw string) url.URL {
	parsed, err := url.Parse(raw)
	if err != nil {
		log.Fatalf("%s: %v", raw, err)
	}
	return *parsed
}
