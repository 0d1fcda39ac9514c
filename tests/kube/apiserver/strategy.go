package main

// One generic create/update/delete strategy drives every built-in kind. A kind (kinds.go)
// contributes only what differs: its name rule, defaults, checks and, for kinds with a
// spec/status split, how to reach its spec and status.

import (
	"context"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// strategy is the main resource's strategy; statusStrategy (below) the /status subresource's.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	k *kind
}

func newStrategy(k *kind) strategy {
	return strategy{Scheme, names.SimpleNameGenerator, k}
}

func (s strategy) NamespaceScoped() bool          { return s.k.namespaced }
func (s strategy) AllowCreateOnUpdate() bool      { return false }
func (s strategy) AllowUnconditionalUpdate() bool { return true }
func (s strategy) Canonicalize(runtime.Object)    {}

func (s strategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }
func (s strategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}

// PrepareForCreate drops a client-set status (only /status writes it) and applies defaults.
func (s strategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	if st := s.k.status; st != nil {
		st.keepStatus(s.k.newObj(), obj)
	}
	if s.k.specOf() != nil {
		mustMeta(obj).SetGeneration(1)
	}
	if s.k.prepare != nil {
		s.k.prepare(obj, nil)
	}
}

// PrepareForUpdate keeps the stored status and bumps metadata.generation when the spec
// (after defaulting) changed, as kube-apiserver does for kinds with a spec.
func (s strategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	if s.k.prepare != nil {
		s.k.prepare(obj, old)
	}
	if st := s.k.status; st != nil {
		st.keepStatus(old, obj)
	}
	if spec := s.k.specOf(); spec != nil && !apiequality.Semantic.DeepEqual(spec(obj), spec(old)) {
		m := mustMeta(obj)
		m.SetGeneration(mustMeta(old).GetGeneration() + 1)
	}
}

func (s strategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	errs := apivalidation.ValidateObjectMetaAccessor(mustMeta(obj), s.k.namespaced, s.k.nameRule(), field.NewPath("metadata"))
	if s.k.validate != nil {
		errs = append(errs, s.k.validate(obj, nil)...)
	}
	return errs
}

func (s strategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	errs := apivalidation.ValidateObjectMetaAccessor(mustMeta(obj), s.k.namespaced, s.k.nameRule(), field.NewPath("metadata"))
	errs = append(errs, apivalidation.ValidateObjectMetaAccessorUpdate(mustMeta(obj), mustMeta(old), field.NewPath("metadata"))...)
	if s.k.validate != nil {
		errs = append(errs, s.k.validate(obj, old)...)
	}
	return errs
}

// GetResetFields tells server-side apply which fields this endpoint never writes.
func (s strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if s.k.status == nil {
		return nil
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.k.gv.String()): fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// statusStrategy writes the status only: everything else is kept from the stored object.
type statusStrategy struct{ strategy }

func (s statusStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	s.k.status.keepSpec(old, obj)
}

func (s statusStrategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	return apivalidation.ValidateObjectMetaAccessorUpdate(mustMeta(obj), mustMeta(old), field.NewPath("metadata"))
}

func (s statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.k.gv.String()): fieldpath.NewSet(fieldpath.MakePathOrDie("spec")),
	}
}

// specOf reaches the spec of a kind whose metadata.generation is tracked; nil for the others.
func (k *kind) specOf() func(obj runtime.Object) any {
	if k.status != nil && k.status.spec != nil {
		return k.status.spec
	}
	return k.spec
}

func mustMeta(obj runtime.Object) metav1.Object {
	m, err := meta.Accessor(obj)
	if err != nil {
		panic(err)
	}
	return m
}
