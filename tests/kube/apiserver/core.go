package main

// Defaults and checks of the core kinds: the subset of kube-apiserver's that a client can
// observe (a refused key, a defaulted type), not its controllers.

import (
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// maxDataBytes is the 1 MiB limit kube-apiserver puts on a Secret's or ConfigMap's data.
const maxDataBytes = 1 << 20

// ---- Namespace: Active from creation. Deletion is immediate: no namespace controller
// empties it first.

func prepareNamespace(ns, old *corev1.Namespace) {
	if old == nil {
		ns.Status.Phase = corev1.NamespaceActive
	}
}

func namespaceFields(ns *corev1.Namespace) fields.Set {
	return fields.Set{"status.phase": string(ns.Status.Phase)}
}

var namespaceStatus = statusAccess{
	keepStatus: func(from, to runtime.Object) {
		to.(*corev1.Namespace).Status = from.(*corev1.Namespace).Status
		if to.(*corev1.Namespace).Status.Phase == "" {
			to.(*corev1.Namespace).Status.Phase = corev1.NamespaceActive
		}
	},
	keepSpec: func(from, to runtime.Object) { to.(*corev1.Namespace).Spec = from.(*corev1.Namespace).Spec },
}

// ---- Secret: stringData is merged into data (kube does it while decoding), type defaults
// to Opaque and may not change.

func prepareSecret(secret, _ *corev1.Secret) {
	if secret.Type == "" {
		secret.Type = corev1.SecretTypeOpaque
	}
	if len(secret.StringData) > 0 {
		if secret.Data == nil {
			secret.Data = map[string][]byte{}
		}
		for key, value := range secret.StringData {
			secret.Data[key] = []byte(value)
		}
		secret.StringData = nil
	}
}

func validateSecret(secret, old *corev1.Secret) field.ErrorList {
	data := field.NewPath("data")
	errs := validateKeys(data, keysOf(secret.Data))
	if size := sizeOf(secret.Data); size > maxDataBytes {
		errs = append(errs, field.TooLong(data, size, maxDataBytes))
	}
	if secret.Type == corev1.SecretTypeTLS {
		for _, key := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey} {
			if _, ok := secret.Data[key]; !ok {
				errs = append(errs, field.Required(data.Key(key), ""))
			}
		}
	}
	if old != nil {
		errs = append(errs, apivalidation.ValidateImmutableField(secret.Type, old.Type, field.NewPath("type"))...)
		errs = append(errs, validateImmutable(secret.Immutable, old.Immutable, secret.Data, old.Data)...)
	}
	return errs
}

func secretFields(secret *corev1.Secret) fields.Set {
	return fields.Set{"type": string(secret.Type)}
}

// ---- ConfigMap

func validateConfigMap(cm, old *corev1.ConfigMap) field.ErrorList {
	errs := validateKeys(field.NewPath("data"), keysOf(cm.Data))
	errs = append(errs, validateKeys(field.NewPath("binaryData"), keysOf(cm.BinaryData))...)
	for key := range cm.BinaryData {
		if _, ok := cm.Data[key]; ok {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(key), key, "duplicate of key present in data"))
		}
	}
	size := sizeOf(cm.BinaryData)
	for _, value := range cm.Data {
		size += len(value)
	}
	if size > maxDataBytes {
		errs = append(errs, field.TooLong(field.NewPath(""), size, maxDataBytes))
	}
	if old != nil {
		errs = append(errs, validateImmutable(cm.Immutable, old.Immutable, cm.Data, old.Data)...)
	}
	return errs
}

// ---- Event: selectable by what kubectl describe asks for; expires after an hour.

func eventFields(e *corev1.Event) fields.Set {
	return fields.Set{
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         e.Source.Component,
		"type":                           e.Type,
	}
}

// ---- Service: defaults and port checks; no cluster IP is allocated.

func defaultService(svc, _ *corev1.Service) {
	if svc.Spec.Type == "" {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if svc.Spec.SessionAffinity == "" {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	for i := range svc.Spec.Ports {
		port := &svc.Spec.Ports[i]
		if port.Protocol == "" {
			port.Protocol = corev1.ProtocolTCP
		}
		if port.TargetPort == (intstr.IntOrString{}) {
			port.TargetPort = intstr.FromInt32(port.Port)
		}
	}
}

func validateService(svc, _ *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	ports := field.NewPath("spec", "ports")
	if len(svc.Spec.Ports) == 0 && svc.Spec.ClusterIP != corev1.ClusterIPNone && svc.Spec.Type != corev1.ServiceTypeExternalName {
		errs = append(errs, field.Required(ports, ""))
	}
	for i, port := range svc.Spec.Ports {
		for _, msg := range validation.IsValidPortNum(int(port.Port)) {
			errs = append(errs, field.Invalid(ports.Index(i).Child("port"), port.Port, msg))
		}
	}
	return errs
}

var serviceStatus = statusAccess{
	keepStatus: func(from, to runtime.Object) { to.(*corev1.Service).Status = from.(*corev1.Service).Status },
	keepSpec:   func(from, to runtime.Object) { to.(*corev1.Service).Spec = from.(*corev1.Service).Spec },
}

// ---- shared by Secret and ConfigMap

func validateKeys(path *field.Path, keys []string) field.ErrorList {
	var errs field.ErrorList
	for _, key := range keys {
		for _, msg := range validation.IsConfigMapKey(key) {
			errs = append(errs, field.Invalid(path.Key(key), key, msg))
		}
	}
	return errs
}

// validateImmutable refuses changes to the data of an immutable object, and unsetting it.
func validateImmutable[V any](immutable, wasImmutable *bool, data, oldData map[string]V) field.ErrorList {
	if wasImmutable == nil || !*wasImmutable {
		return nil
	}
	var errs field.ErrorList
	if immutable == nil || !*immutable {
		errs = append(errs, field.Forbidden(field.NewPath("immutable"), "field is immutable when `immutable` is set"))
	}
	if !apiequality.Semantic.DeepEqual(data, oldData) {
		errs = append(errs, field.Forbidden(field.NewPath("data"), "field is immutable when `immutable` is set"))
	}
	return errs
}

func keysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for key := range m {
		keys = append(keys, key)
	}
	return keys
}

func sizeOf(m map[string][]byte) int {
	size := 0
	for _, value := range m {
		size += len(value)
	}
	return size
}
