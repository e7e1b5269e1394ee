// Command naive is the memory baseline of the benchmark: plain dynamic
// informers over the given resources, with no transform, as a naive
// implementation of the same service would hold them. It prints "synced"
// once every cache is full and then waits to be stopped.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file")
	resources := flag.String("resources", "v1/configmaps", "comma-separated group/version/resource list (core: v1/resource)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg.QPS, cfg.Burst = 20, 40 // the service's defaults
	factory := dynamicinformer.NewDynamicSharedInformerFactory(dynamic.NewForConfigOrDie(cfg), 0)
	var synced []cache.InformerSynced
	for _, r := range strings.Split(*resources, ",") {
		parts := strings.Split(r, "/")
		var gvr schema.GroupVersionResource
		switch len(parts) {
		case 2:
			gvr = schema.GroupVersionResource{Version: parts[0], Resource: parts[1]}
		case 3:
			gvr = schema.GroupVersionResource{Group: parts[0], Version: parts[1], Resource: parts[2]}
		default:
			fmt.Fprintf(os.Stderr, "bad resource %q\n", r)
			os.Exit(2)
		}
		inf := factory.ForResource(gvr).Informer()
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{}) // a handler, as the service has
		synced = append(synced, inf.HasSynced)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		os.Exit(1)
	}
	fmt.Println("synced")
	<-ctx.Done()
}
