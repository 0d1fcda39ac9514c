// Command kube-apiserver is the test suite's Kubernetes API server: the stock
// k8s.io/apiextensions-apiserver (CustomResourceDefinitions and custom resources) with the
// built-in kinds the operator uses served beside it on the same GenericAPIServer, each with
// real etcd storage (genericregistry.Store), RBAC enforced for bearer tokens, and the audit log.
//
// It is built from Debian's packaged Go sources in GOPATH mode by tests/kube_build.py; no
// internal Kubernetes types (k8s.io/kubernetes) are needed: the k8s.io/api types are
// registered a second time as their group's internal version (scheme.go).
//
// Flags are the stock server's (etcd, serving, client CA, audit, ...) plus --token-auth-file.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/component-base/cli"
)

func main() {
	ctx := genericapiserver.SetupSignalContext()
	o := options.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	var tokenFile string

	cmd := &cobra.Command{
		Use:   "kube-apiserver",
		Short: "Kubernetes API server for mt5fleet's tests: CRDs plus the built-in kinds the operator uses",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return o.ServerRunOptions.ComponentGlobalsRegistry.Set()
		},
		RunE: func(c *cobra.Command, _ []string) error {
			if tokenFile == "" {
				return fmt.Errorf("--token-auth-file is required")
			}
			adjustOptions(o)
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			server, err := newServer(o, tokenFile)
			if err != nil {
				return err
			}
			return server.PrepareRun().RunWithContext(c.Context())
		},
	}
	cmd.SetContext(ctx)
	o.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&tokenFile, "token-auth-file", "",
		"CSV of bearer tokens (token,user,uid,\"group1,group2\"), re-read when the file changes")
	os.Exit(cli.Run(cmd))
}

// adjustOptions turns off what needs a Kubernetes cluster behind this server: delegated
// authentication and authorization (this server authenticates client certificates and its
// token file itself, and authorizes with RBAC, authorizer.go), the core-API informers, the
// webhook/policy admission plugins that need them, and priority-and-fairness. With no
// garbage collector running, deletion ignores propagation policies: an object is removed at
// once (after its own finalizers) instead of waiting forever for an orphan or foreground
// finalizer that nothing would remove.
func adjustOptions(o *options.CustomResourceDefinitionsServerOptions) {
	ro := o.RecommendedOptions
	ro.Etcd.EnableGarbageCollection = false
	ro.Authentication.RemoteKubeConfigFileOptional = true
	ro.Authentication.SkipInClusterLookup = true
	ro.Authorization = nil
	ro.CoreAPI = nil
	ro.Admission = nil
	ro.Features.EnablePriorityAndFairness = false
}
