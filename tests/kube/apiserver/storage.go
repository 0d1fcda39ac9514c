package main

// Storage of the built-in kinds: one genericregistry.Store over etcd per kind (with the
// watch cache, as kube-apiserver has), installed as API groups on the shared server.

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	serverstorage "k8s.io/apiserver/pkg/server/storage"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

// builtinRESTOptions stores each built-in kind in etcd as its v1 JSON (what kube-apiserver
// does with --storage-media-type=application/json), under /registry/<group>/<resource>.
func builtinRESTOptions(etcd *genericoptions.EtcdOptions, c *genericapiserver.RecommendedConfig) generic.RESTOptionsGetter {
	storageConfig := etcd.StorageConfig
	storageConfig.Prefix = "/registry"
	factory := serverstorage.NewDefaultStorageFactory(storageConfig, runtime.ContentTypeJSON, Codecs,
		serverstorage.NewDefaultResourceEncodingConfig(Scheme), serverstorage.NewResourceConfig(), nil)
	return etcd.CreateRESTOptionsGetter(factory, c.ResourceTransformers)
}

// installBuiltins creates every kind's store and serves them: the core group under /api,
// the others under /apis. It returns the main stores by group and resource.
func installBuiltins(s *genericapiserver.GenericAPIServer, options generic.RESTOptionsGetter) (map[schema.GroupResource]*genericregistry.Store, error) {
	stores := map[schema.GroupResource]*genericregistry.Store{}
	groups := map[string]*genericapiserver.APIGroupInfo{}
	var order []string
	for _, k := range builtinKinds {
		store, err := newStore(k, options)
		if err != nil {
			return nil, err
		}
		stores[k.gv.WithResource(k.resource).GroupResource()] = store
		info, ok := groups[k.gv.Group]
		if !ok {
			created := genericapiserver.NewDefaultAPIGroupInfo(k.gv.Group, Scheme, ParameterCodec, Codecs)
			info = &created
			groups[k.gv.Group] = info
			order = append(order, k.gv.Group)
		}
		resources := info.VersionedResourcesStorageMap[k.gv.Version]
		if resources == nil {
			resources = map[string]rest.Storage{}
			info.VersionedResourcesStorageMap[k.gv.Version] = resources
		}
		resources[k.resource] = &resourceREST{store, k}
		if k.status != nil && k.statusEndpoint {
			resources[k.resource+"/status"] = newStatusREST(store, k)
		}
		for sub, newREST := range k.subresources {
			resources[k.resource+"/"+sub] = newREST(store)
		}
	}
	for _, group := range order {
		var err error
		if group == "" {
			err = s.InstallLegacyAPIGroup(genericapiserver.DefaultLegacyAPIPrefix, groups[group])
		} else {
			err = s.InstallAPIGroups(groups[group])
		}
		if err != nil {
			return nil, err
		}
	}
	return stores, nil
}

func newStore(k *kind, options generic.RESTOptionsGetter) (*genericregistry.Store, error) {
	s := newStrategy(k)
	resource := k.gv.WithResource(k.resource).GroupResource()
	store := &genericregistry.Store{
		NewFunc:                   k.newObj,
		NewListFunc:               k.newList,
		DefaultQualifiedResource:  resource,
		SingularQualifiedResource: k.gv.WithResource(k.singular).GroupResource(),
		CreateStrategy:            s,
		UpdateStrategy:            s,
		DeleteStrategy:            s,
		ResetFieldsStrategy:       s,
		TableConvertor:            rest.NewDefaultTableConvertor(resource),
	}
	if k.ttlSeconds > 0 {
		store.TTLFunc = func(runtime.Object, uint64, bool) (uint64, error) { return k.ttlSeconds, nil }
	}
	if err := store.CompleteWithOptions(&generic.StoreOptions{RESTOptions: options, AttrFunc: k.attrs}); err != nil {
		return nil, err
	}
	return store, nil
}

// resourceREST is a kind's main endpoint: the store plus what discovery shows of the kind.
type resourceREST struct {
	*genericregistry.Store
	k *kind
}

func (r *resourceREST) ShortNames() []string { return r.k.shortNames }
func (r *resourceREST) Categories() []string { return r.k.categories }

// statusREST is the /status subresource: the same storage with the status strategy.
type statusREST struct {
	store *genericregistry.Store
}

func newStatusREST(main *genericregistry.Store, k *kind) *statusREST {
	store := *main
	status := statusStrategy{newStrategy(k)}
	store.UpdateStrategy = status
	store.ResetFieldsStrategy = status
	return &statusREST{&store}
}

func (r *statusREST) New() runtime.Object { return r.store.New() }
func (r *statusREST) Destroy()            {}

func (r *statusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}

func (r *statusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc,
	updateValidation rest.ValidateObjectUpdateFunc, _ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// A subresource never creates its object.
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}

func (r *statusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}
