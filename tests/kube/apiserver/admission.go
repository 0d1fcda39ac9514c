package main

// The one admission plugin: kube-apiserver's NamespaceLifecycle refuses to create an object
// in a namespace that does not exist (custom resources included).

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/admission"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
)

type namespaceLifecycle struct {
	namespaces *genericregistry.Store
}

var _ admission.ValidationInterface = &namespaceLifecycle{}

func (p *namespaceLifecycle) Handles(op admission.Operation) bool { return op == admission.Create }

func (p *namespaceLifecycle) Validate(ctx context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	namespace := a.GetNamespace()
	if namespace == "" || a.GetSubresource() != "" || a.GetKind().GroupKind() == corev1.SchemeGroupVersion.WithKind("Namespace").GroupKind() {
		return nil
	}
	// A quorum read: a namespace created a moment ago counts.
	_, err := p.namespaces.Get(inNamespace(ctx, ""), namespace, &metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return apierrors.NewNotFound(corev1.Resource("namespaces"), namespace)
	}
	return err
}
