package main

// The built-in kinds served, with what each needs beyond the generic strategy. Everything
// the mt5fleet operator and kopf touch is here; what kube-apiserver's controllers would do
// for them (garbage collection, namespace finalization, Deployment rollouts, Service IPs)
// is not.

import (
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
)

type kind struct {
	gv         schema.GroupVersion
	resource   string // plural, as in the URL
	singular   string
	namespaced bool
	shortNames []string
	categories []string
	newObj     func() runtime.Object
	newList    func() runtime.Object
	names      apivalidation.ValidateNameFunc                // nil: a DNS subdomain
	prepare    func(obj, old runtime.Object)                 // defaults and normalization; old is nil on create
	validate   func(obj, old runtime.Object) field.ErrorList // the kind's own checks; old is nil on create
	fields     func(obj runtime.Object) fields.Set           // selectable fields beyond metadata.name/namespace
	ttlSeconds uint64                                        // etcd lease on every write (Events)
	spec       func(obj runtime.Object) any                  // a kind with a spec and no status: tracks metadata.generation

	status         *statusAccess // nil: no spec/status split
	statusEndpoint bool          // serve <resource>/status
	subresources   map[string]func(*genericregistry.Store) rest.Storage
}

// statusAccess reaches the spec and status of a kind with both.
type statusAccess struct {
	spec       func(obj runtime.Object) any // nil: metadata.generation is not tracked
	keepStatus func(from, to runtime.Object)
	keepSpec   func(from, to runtime.Object)
}

const coreGroup = ""

var namespacesResource = schema.GroupResource{Group: coreGroup, Resource: "namespaces"}

var builtinKinds = []*kind{
	{gv: corev1.SchemeGroupVersion, resource: "namespaces", singular: "namespace", shortNames: []string{"ns"},
		newObj: func() runtime.Object { return &corev1.Namespace{} }, newList: func() runtime.Object { return &corev1.NamespaceList{} },
		names: apivalidation.ValidateNamespaceName, prepare: typed(prepareNamespace), fields: typedFields(namespaceFields),
		status: &namespaceStatus, statusEndpoint: true},
	{gv: corev1.SchemeGroupVersion, resource: "secrets", singular: "secret", namespaced: true,
		newObj: func() runtime.Object { return &corev1.Secret{} }, newList: func() runtime.Object { return &corev1.SecretList{} },
		prepare: typed(prepareSecret), validate: typedCheck(validateSecret), fields: typedFields(secretFields)},
	{gv: corev1.SchemeGroupVersion, resource: "configmaps", singular: "configmap", namespaced: true, shortNames: []string{"cm"},
		newObj: func() runtime.Object { return &corev1.ConfigMap{} }, newList: func() runtime.Object { return &corev1.ConfigMapList{} },
		validate: typedCheck(validateConfigMap)},
	{gv: corev1.SchemeGroupVersion, resource: "events", singular: "event", namespaced: true, shortNames: []string{"ev"},
		newObj: func() runtime.Object { return &corev1.Event{} }, newList: func() runtime.Object { return &corev1.EventList{} },
		fields: typedFields(eventFields), ttlSeconds: 3600},
	{gv: corev1.SchemeGroupVersion, resource: "serviceaccounts", singular: "serviceaccount", namespaced: true, shortNames: []string{"sa"},
		newObj: func() runtime.Object { return &corev1.ServiceAccount{} }, newList: func() runtime.Object { return &corev1.ServiceAccountList{} }},
	{gv: corev1.SchemeGroupVersion, resource: "services", singular: "service", namespaced: true, shortNames: []string{"svc"},
		categories: []string{"all"},
		newObj:     func() runtime.Object { return &corev1.Service{} }, newList: func() runtime.Object { return &corev1.ServiceList{} },
		names: apivalidation.NameIsDNS1035Label, prepare: typed(defaultService), validate: typedCheck(validateService),
		status: &serviceStatus, statusEndpoint: true},
	{gv: appsv1.SchemeGroupVersion, resource: "deployments", singular: "deployment", namespaced: true, shortNames: []string{"deploy"},
		categories: []string{"all"},
		newObj:     func() runtime.Object { return &appsv1.Deployment{} }, newList: func() runtime.Object { return &appsv1.DeploymentList{} },
		prepare: typed(defaultDeployment), validate: typedCheck(validateDeployment),
		status: &deploymentStatus, statusEndpoint: true,
		subresources: map[string]func(*genericregistry.Store) rest.Storage{"scale": newScaleREST}},
	{gv: policyv1.SchemeGroupVersion, resource: "poddisruptionbudgets", singular: "poddisruptionbudget", namespaced: true,
		shortNames: []string{"pdb"},
		newObj:     func() runtime.Object { return &policyv1.PodDisruptionBudget{} }, newList: func() runtime.Object { return &policyv1.PodDisruptionBudgetList{} },
		validate: typedCheck(validatePodDisruptionBudget), status: &podDisruptionBudgetStatus, statusEndpoint: true},
	{gv: networkingv1.SchemeGroupVersion, resource: "networkpolicies", singular: "networkpolicy", namespaced: true,
		shortNames: []string{"netpol"},
		newObj:     func() runtime.Object { return &networkingv1.NetworkPolicy{} }, newList: func() runtime.Object { return &networkingv1.NetworkPolicyList{} },
		prepare: typed(defaultNetworkPolicy), validate: typedCheck(validateNetworkPolicy), spec: networkPolicySpec},
	{gv: coordinationv1.SchemeGroupVersion, resource: "leases", singular: "lease", namespaced: true,
		newObj: func() runtime.Object { return &coordinationv1.Lease{} }, newList: func() runtime.Object { return &coordinationv1.LeaseList{} }},
	{gv: rbacv1.SchemeGroupVersion, resource: "roles", singular: "role", namespaced: true,
		newObj: func() runtime.Object { return &rbacv1.Role{} }, newList: func() runtime.Object { return &rbacv1.RoleList{} },
		names: path.ValidatePathSegmentName, validate: typedCheck(validateRole)},
	{gv: rbacv1.SchemeGroupVersion, resource: "clusterroles", singular: "clusterrole",
		newObj: func() runtime.Object { return &rbacv1.ClusterRole{} }, newList: func() runtime.Object { return &rbacv1.ClusterRoleList{} },
		names: path.ValidatePathSegmentName, validate: typedCheck(validateClusterRole)},
	{gv: rbacv1.SchemeGroupVersion, resource: "rolebindings", singular: "rolebinding", namespaced: true,
		newObj: func() runtime.Object { return &rbacv1.RoleBinding{} }, newList: func() runtime.Object { return &rbacv1.RoleBindingList{} },
		names: path.ValidatePathSegmentName, validate: typedCheck(validateRoleBinding)},
	{gv: rbacv1.SchemeGroupVersion, resource: "clusterrolebindings", singular: "clusterrolebinding",
		newObj: func() runtime.Object { return &rbacv1.ClusterRoleBinding{} }, newList: func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} },
		names: path.ValidatePathSegmentName, validate: typedCheck(validateClusterRoleBinding)},
}

func (k *kind) nameRule() apivalidation.ValidateNameFunc {
	if k.names != nil {
		return k.names
	}
	return apivalidation.NameIsDNSSubdomain
}

// attrs are the labels and fields a list or watch can select on.
func (k *kind) attrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	meta := mustMeta(obj)
	set := fields.Set{"metadata.name": meta.GetName()}
	if k.namespaced {
		set["metadata.namespace"] = meta.GetNamespace()
	}
	if k.fields != nil {
		for name, value := range k.fields(obj) {
			set[name] = value
		}
	}
	return labels.Set(meta.GetLabels()), set, nil
}

// selectableFields names the fields attrs offers beyond metadata, for the scheme's
// field-label conversions (an unknown field selector is refused, as kube-apiserver does).
func (k *kind) selectableFields() []string {
	if k.fields == nil {
		return nil
	}
	var names []string
	for name := range k.fields(k.newObj()) {
		names = append(names, name)
	}
	return names
}

// typed adapts a kind's typed hook to the strategy's runtime.Object signature.
func typed[T runtime.Object](f func(obj, old T)) func(obj, old runtime.Object) {
	return func(obj, old runtime.Object) {
		var previous T
		if old != nil {
			previous = old.(T)
		}
		f(obj.(T), previous)
	}
}

func typedCheck[T runtime.Object](f func(obj, old T) field.ErrorList) func(obj, old runtime.Object) field.ErrorList {
	return func(obj, old runtime.Object) field.ErrorList {
		var previous T
		if old != nil {
			previous = old.(T)
		}
		return f(obj.(T), previous)
	}
}

func typedFields[T runtime.Object](f func(obj T) fields.Set) func(obj runtime.Object) fields.Set {
	return func(obj runtime.Object) fields.Set { return f(obj.(T)) }
}
