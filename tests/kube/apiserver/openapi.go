package main

// The OpenAPI definitions served: the apiextensions server's own (CRD types, meta, autoscaling
// Scale) and the built-in kinds', generated at build time by Debian's openapi-gen from the
// packaged k8s.io/api sources into the package imported here (see tests/kube_build.py).

import (
	extensionsopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	"k8s.io/kube-openapi/pkg/common"

	builtinopenapi "mt5fleet.io/kube-apiserver/openapi"
)

func openAPIDefinitions(ref common.ReferenceCallback) map[string]common.OpenAPIDefinition {
	definitions := builtinopenapi.GetOpenAPIDefinitions(ref)
	for name, definition := range extensionsopenapi.GetOpenAPIDefinitions(ref) {
		definitions[name] = definition
	}
	return definitions
}
