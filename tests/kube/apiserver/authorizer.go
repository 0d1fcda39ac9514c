package main

// RBAC as kube-apiserver enforces it, over the Roles, ClusterRoles and bindings stored in
// this server: a request is allowed when the rules bound to its user (directly, through one
// of its groups, or as a ServiceAccount) cover it, judged by k8s.io/component-helpers'
// rbac validation.Covers. system:masters (the admin certificate, the loopback client) may
// do anything; every authenticated user may read the discovery and health endpoints, as
// the default system:discovery and system:public-info-viewer roles allow. Otherwise: 403.

import (
	"context"
	"fmt"
	"strings"

	rbacv1 "k8s.io/api/rbac/v1"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/component-helpers/auth/rbac/validation"
)

var (
	publicInfoRules = []rbacv1.PolicyRule{{Verbs: []string{"get"},
		NonResourceURLs: []string{"/healthz", "/livez", "/readyz", "/version", "/version/"}}}
	discoveryRules = []rbacv1.PolicyRule{{Verbs: []string{"get"},
		NonResourceURLs: []string{"/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"}}}
)

type rbacAuthorizer struct {
	roles, clusterRoles, roleBindings, clusterRoleBindings *genericregistry.Store
}

func (a *rbacAuthorizer) use(stores map[schema.GroupResource]*genericregistry.Store) {
	rbac := func(resource string) *genericregistry.Store { return stores[rbacv1.Resource(resource)] }
	a.roles, a.clusterRoles = rbac("roles"), rbac("clusterroles")
	a.roleBindings, a.clusterRoleBindings = rbac("rolebindings"), rbac("clusterrolebindings")
}

func (a *rbacAuthorizer) Authorize(ctx context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
	who := attrs.GetUser()
	if who == nil {
		return authorizer.DecisionNoOpinion, "no user", nil
	}
	groups := map[string]bool{}
	for _, g := range who.GetGroups() {
		groups[g] = true
	}
	if groups[user.SystemPrivilegedGroup] {
		return authorizer.DecisionAllow, "", nil
	}
	rules := append([]rbacv1.PolicyRule{}, publicInfoRules...)
	if groups[user.AllAuthenticated] {
		rules = append(rules, discoveryRules...)
	}
	bound, err := a.rulesFor(ctx, who, groups, attrs.GetNamespace())
	if err != nil {
		return authorizer.DecisionNoOpinion, "", err
	}
	rules = append(rules, bound...)
	requested := requestedRule(attrs)
	if requested.ResourceNames == nil {
		// A rule naming resources grants nothing to a request without a name (list, create).
		rules = withoutResourceNames(rules)
	}
	if covered, _ := validation.Covers(rules, []rbacv1.PolicyRule{requested}); covered {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionNoOpinion, fmt.Sprintf("RBAC: no rule bound to %q allows it", who.GetName()), nil
}

func requestedRule(attrs authorizer.Attributes) rbacv1.PolicyRule {
	if !attrs.IsResourceRequest() {
		return rbacv1.PolicyRule{Verbs: []string{attrs.GetVerb()}, NonResourceURLs: []string{attrs.GetPath()}}
	}
	resource := attrs.GetResource()
	if sub := attrs.GetSubresource(); sub != "" {
		resource += "/" + sub
	}
	rule := rbacv1.PolicyRule{Verbs: []string{attrs.GetVerb()}, APIGroups: []string{attrs.GetAPIGroup()}, Resources: []string{resource}}
	if name := attrs.GetName(); name != "" {
		rule.ResourceNames = []string{name}
	}
	return rule
}

func withoutResourceNames(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	var kept []rbacv1.PolicyRule
	for _, rule := range rules {
		if len(rule.ResourceNames) == 0 {
			kept = append(kept, rule)
		}
	}
	return kept
}

// rulesFor collects the rules of every ClusterRoleBinding, and every RoleBinding of the
// request's namespace, that names the user. Reads come from the watch cache.
func (a *rbacAuthorizer) rulesFor(ctx context.Context, who user.Info, groups map[string]bool, namespace string) ([]rbacv1.PolicyRule, error) {
	var rules []rbacv1.PolicyRule
	obj, err := a.clusterRoleBindings.List(inNamespace(ctx, ""), cachedList())
	if err != nil {
		return nil, err
	}
	for _, b := range obj.(*rbacv1.ClusterRoleBindingList).Items {
		if bindsUser(b.Subjects, "", who, groups) {
			rules = append(rules, a.roleRules(ctx, b.RoleRef, "")...)
		}
	}
	if namespace == "" {
		return rules, nil
	}
	obj, err = a.roleBindings.List(inNamespace(ctx, namespace), cachedList())
	if err != nil {
		return nil, err
	}
	for _, b := range obj.(*rbacv1.RoleBindingList).Items {
		if bindsUser(b.Subjects, namespace, who, groups) {
			rules = append(rules, a.roleRules(ctx, b.RoleRef, namespace)...)
		}
	}
	return rules, nil
}

// roleRules are the rules of a binding's role; a missing role grants nothing.
func (a *rbacAuthorizer) roleRules(ctx context.Context, ref rbacv1.RoleRef, namespace string) []rbacv1.PolicyRule {
	cached := &metav1.GetOptions{ResourceVersion: "0"}
	if ref.Kind == "Role" {
		if obj, err := a.roles.Get(inNamespace(ctx, namespace), ref.Name, cached); err == nil {
			return obj.(*rbacv1.Role).Rules
		}
		return nil
	}
	if obj, err := a.clusterRoles.Get(inNamespace(ctx, ""), ref.Name, cached); err == nil {
		return obj.(*rbacv1.ClusterRole).Rules
	}
	return nil
}

func bindsUser(subjects []rbacv1.Subject, namespace string, who user.Info, groups map[string]bool) bool {
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			if s.Name == who.GetName() {
				return true
			}
		case rbacv1.GroupKind:
			if groups[s.Name] {
				return true
			}
		case rbacv1.ServiceAccountKind:
			ns := s.Namespace
			if ns == "" {
				ns = namespace
			}
			if strings.Join([]string{"system", "serviceaccount", ns, s.Name}, ":") == who.GetName() {
				return true
			}
		}
	}
	return false
}

func inNamespace(ctx context.Context, namespace string) context.Context {
	return genericapirequest.WithNamespace(context.WithoutCancel(ctx), namespace)
}

func cachedList() *metainternalversion.ListOptions {
	return &metainternalversion.ListOptions{ResourceVersion: "0"}
}
