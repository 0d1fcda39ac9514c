package main

// The legacy group list at /apis names the CRD groups too. kube-apiserver's aggregator adds
// them; the apiextensions server alone adds them only to aggregated discovery (what kubectl
// reads), so clients that read the plain list (kopf, the Python client) would not find
// the custom resources without this.

import (
	"sort"
	"sync"

	"k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	listers "k8s.io/apiextensions-apiserver/pkg/client/listers/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

type crdGroups struct {
	crds   listers.CustomResourceDefinitionLister
	groups discovery.GroupManager

	mu     sync.Mutex
	listed map[string]bool
}

func listCRDGroups(crds *apiserver.CustomResourceDefinitions, groups discovery.GroupManager) error {
	informer := crds.Informers.Apiextensions().V1().CustomResourceDefinitions()
	g := &crdGroups{crds: informer.Lister(), groups: groups, listed: map[string]bool{}}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { g.sync() },
		UpdateFunc: func(any, any) { g.sync() },
		DeleteFunc: func(any) { g.sync() },
	})
	return err
}

// sync lists the groups of the established CRDs, each with its served versions, the
// preferred one first (v2 before v1 before v1beta1 ...).
func (g *crdGroups) sync() {
	crds, err := g.crds.List(labels.Everything())
	if err != nil {
		klog.ErrorS(err, "Listing CRDs for discovery")
		return
	}
	versions := map[string]map[string]bool{}
	for _, crd := range crds {
		if !apihelpers.IsCRDConditionTrue(crd, apiextensionsv1.Established) {
			continue
		}
		for _, v := range crd.Spec.Versions {
			if v.Served {
				if versions[crd.Spec.Group] == nil {
					versions[crd.Spec.Group] = map[string]bool{}
				}
				versions[crd.Spec.Group][v.Name] = true
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, served := range versions {
		g.groups.AddGroup(apiGroup(name, served))
		g.listed[name] = true
	}
	for name := range g.listed {
		if versions[name] == nil {
			g.groups.RemoveGroup(name)
			delete(g.listed, name)
		}
	}
}

func apiGroup(name string, served map[string]bool) metav1.APIGroup {
	var names []string
	for v := range served {
		names = append(names, v)
	}
	sort.Slice(names, func(i, j int) bool { return version.CompareKubeAwareVersionStrings(names[i], names[j]) > 0 })
	group := metav1.APIGroup{Name: name}
	for _, v := range names {
		group.Versions = append(group.Versions, metav1.GroupVersionForDiscovery{GroupVersion: name + "/" + v, Version: v})
	}
	group.PreferredVersion = group.Versions[0]
	return group
}
