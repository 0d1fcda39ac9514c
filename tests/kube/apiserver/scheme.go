package main

// The scheme of the built-in kinds. kube-apiserver converts every object to an "internal"
// hub type (k8s.io/kubernetes/pkg/apis/...) that Debian does not package. Registering each
// k8s.io/api type a second time under its group's runtime.APIVersionInternal makes the
// external type its own hub: runtime.Scheme sees the same Go type on both sides of a
// conversion and copies instead of converting, so the generic registry, the watch cache,
// field managers and codecs all work on the k8s.io/api types directly.

import (
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
)

var (
	// Scheme holds the external and the (identical) internal registrations.
	Scheme = runtime.NewScheme()
	// Codecs serve the built-in groups and encode them for etcd.
	Codecs = serializer.NewCodecFactory(Scheme)
	// ParameterCodec decodes query parameters (list and get options).
	ParameterCodec = runtime.NewParameterCodec(Scheme)
	// externalScheme names OpenAPI definitions after external kinds only, so that the
	// x-kubernetes-group-version-kind extensions never mention an internal version.
	externalScheme = runtime.NewScheme()
)

func init() {
	for _, k := range builtinKinds {
		register(k.gv, k.newObj(), k.newList())
	}
	// The type of deployments/scale.
	register(autoscalingv1.SchemeGroupVersion, &autoscalingv1.Scale{})
	for _, k := range builtinKinds {
		if names := k.selectableFields(); len(names) > 0 {
			gvk := k.gv.WithKind(kindName(k.newObj()))
			utilruntime.Must(Scheme.AddFieldLabelConversionFunc(gvk, allowFieldLabels(names)))
		}
	}
}

// register adds objects to gv and, as the same Go types, to gv's internal version.
func register(gv schema.GroupVersion, objects ...runtime.Object) {
	internal := schema.GroupVersion{Group: gv.Group, Version: runtime.APIVersionInternal}
	Scheme.AddKnownTypes(gv, objects...)
	Scheme.AddKnownTypes(internal, objects...)
	externalScheme.AddKnownTypes(gv, objects...)
	// Options, watch events and the unversioned meta types, as every API group has.
	metav1.AddToGroupVersion(Scheme, gv)
	utilruntime.Must(Scheme.SetVersionPriority(gv))
}

func kindName(obj runtime.Object) string {
	gvks, _, err := externalScheme.ObjectKinds(obj)
	utilruntime.Must(err)
	return gvks[0].Kind
}

// allowFieldLabels accepts metadata.name, metadata.namespace and the kind's own fields.
func allowFieldLabels(allowed []string) runtime.FieldLabelConversionFunc {
	return func(label, value string) (string, string, error) {
		if label == "metadata.name" || label == "metadata.namespace" {
			return label, value, nil
		}
		for _, name := range allowed {
			if label == name {
				return label, value, nil
			}
		}
		return "", "", &fieldLabelError{label}
	}
}

type fieldLabelError struct{ label string }

func (e *fieldLabelError) Error() string { return "field label not supported: " + e.label }
