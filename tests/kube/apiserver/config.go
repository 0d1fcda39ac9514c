package main

// newServer assembles the server: the stock apiextensions server (CRDs and custom
// resources), with this package's authentication, authorization, admission, OpenAPI and
// built-in kinds put into the same GenericAPIServer.

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	noopoteltrace "go.opentelemetry.io/otel/trace/noop"

	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/request/union"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/webhook"
	netutils "k8s.io/utils/net"
)

func newServer(o *options.CustomResourceDefinitionsServerOptions, tokenFile string) (*genericapiserver.GenericAPIServer, error) {
	localhost := []net.IP{netutils.ParseIPSloppy("127.0.0.1")}
	if err := o.RecommendedOptions.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, localhost); err != nil {
		return nil, fmt.Errorf("self-signed serving certificate: %w", err)
	}

	c := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	// OpenAPI for CRDs and built-in kinds alike: kubectl explain and server-side apply need
	// it, and the CRD OpenAPI controllers only run when the v2 spec is served too.
	namer := openapinamer.NewDefinitionNamer(apiserver.Scheme, externalScheme)
	definitions := openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(openAPIDefinitions)
	c.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(definitions, namer)
	c.OpenAPIConfig.Info.Title = "Kubernetes"
	c.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(definitions, namer)
	c.OpenAPIV3Config.Info.Title = "Kubernetes"

	if err := o.ServerRunOptions.ApplyTo(&c.Config); err != nil {
		return nil, err
	}
	if err := o.RecommendedOptions.ApplyTo(c); err != nil {
		return nil, err
	}
	if err := o.APIEnablement.ApplyTo(&c.Config, apiserver.DefaultAPIResourceConfigSource(), apiserver.Scheme); err != nil {
		return nil, err
	}

	// Bearer tokens first, since the client-certificate chain ends in the anonymous
	// authenticator; an unknown token is a 401, not an anonymous request.
	tokens := group.NewAuthenticatedGroupAdder(bearertoken.New(newTokenFile(tokenFile)))
	c.Authentication.Authenticator = union.NewFailOnError(tokens, c.Authentication.Authenticator)
	authz := &rbacAuthorizer{}
	c.Authorization.Authorizer = authz
	lifecycle := &namespaceLifecycle{}
	c.AdmissionControl = admission.NewChainHandler(lifecycle)

	// GET /apis/ and /api/ (what the Python client asks for) answer as /apis and /api do,
	// as they do on kube-apiserver, whose aggregator serves both spellings.
	c.BuildHandlerChainFunc = func(apiHandler http.Handler, config *genericapiserver.Config) http.Handler {
		chain := genericapiserver.DefaultBuildHandlerChain(apiHandler, config)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/apis/" || r.URL.Path == "/api/" {
				r.URL.Path = strings.TrimSuffix(r.URL.Path, "/")
			}
			chain.ServeHTTP(w, r)
		})
	}

	config := &apiserver.Config{
		GenericConfig: c,
		ExtraConfig: apiserver.ExtraConfig{
			CRDRESTOptionsGetter: options.NewCRDRESTOptionsGetter(*o.RecommendedOptions.Etcd, c.ResourceTransformers, c.StorageObjectCountTracker),
			ServiceResolver:      noServices{},
			AuthResolverWrapper:  webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, c.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}
	completed := config.Complete()
	// The apiextensions server leaves /apis to an aggregator; here it serves the group list
	// itself (discovery.go adds the CRD groups to it).
	completed.GenericConfig.EnableDiscovery = true
	crds, err := completed.New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, err
	}
	server := crds.GenericAPIServer

	stores, err := installBuiltins(server, builtinRESTOptions(o.RecommendedOptions.Etcd, c))
	if err != nil {
		return nil, err
	}
	authz.use(stores)
	lifecycle.namespaces = stores[namespacesResource]
	if err := listCRDGroups(crds, server.DiscoveryGroupManager); err != nil {
		return nil, err
	}
	server.AddPostStartHookOrDie("mt5fleet-bootstrap", bootstrap)
	return server, nil
}

// noServices resolves no Service: conversion webhooks are not supported here.
type noServices struct{}

func (noServices) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	return nil, fmt.Errorf("services are not routable from this test server (%s/%s:%d)", namespace, name, port)
}
