// Command pstest serves Google's fake Pub/Sub server (cloud.google.com/go/pubsub/pstest)
// on 127.0.0.1:<port>, for the gcppubsub:// driver tests. Built offline from
// Debian's golang-google-cloud-dev by scripts/ensure-pstest.sh.
package main

import (
	"context"
	"flag"
	"log"
	"net"
	"strconv"
	"strings"

	"cloud.google.com/go/pubsub/pstest"
	pb "google.golang.org/genproto/googleapis/pubsub/v1"
	"google.golang.org/grpc"
)

func main() {
	port := flag.Int("port", 8085, "TCP port on 127.0.0.1")
	topics := flag.String("topics", "", "comma-separated topics (projects/P/topics/T) created before listening")
	flag.Parse()
	// pstest.NewServer also listens on a random port of its own; only its state is used.
	fake := pstest.NewServer()
	for _, name := range strings.Split(*topics, ",") {
		if name == "" {
			continue
		}
		if _, err := fake.GServer.CreateTopic(context.Background(), &pb.Topic{Name: name}); err != nil {
			log.Fatalf("pstest: topic %s: %v", name, err)
		}
	}
	lis, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	if err != nil {
		log.Fatalf("pstest: %v", err)
	}
	srv := grpc.NewServer()
	pb.RegisterPublisherServer(srv, &fake.GServer)
	pb.RegisterSubscriberServer(srv, &fake.GServer)
	log.Printf("pstest: serving on %s", lis.Addr())
	log.Fatal(srv.Serve(lis))
}
