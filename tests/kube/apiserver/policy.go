package main

// PodDisruptionBudgets (policy/v1) and NetworkPolicies (networking.k8s.io/v1), which the
// Helm chart renders: kube-apiserver's defaults and checks for them, metadata.generation
// bumped on spec changes. Nothing acts on them: no disruption controller fills a budget's
// status (it stays as its writer left it) and no network plugin enforces a policy.

import (
	"net"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// ---- PodDisruptionBudget (pkg/apis/policy/validation): minAvailable or maxUnavailable, not
// both, each a non-negative number or a percentage up to 100%; a valid selector.

func validatePodDisruptionBudget(pdb, _ *policyv1.PodDisruptionBudget) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if pdb.Spec.MinAvailable != nil && pdb.Spec.MaxUnavailable != nil {
		errs = append(errs, field.Invalid(spec, pdb.Spec, "minAvailable and maxUnavailable cannot be both set"))
	}
	for name, value := range map[string]*intstr.IntOrString{"minAvailable": pdb.Spec.MinAvailable, "maxUnavailable": pdb.Spec.MaxUnavailable} {
		if value != nil {
			errs = append(errs, validateIntOrPercent(*value, spec.Child(name))...)
		}
	}
	errs = append(errs, metav1validation.ValidateLabelSelector(pdb.Spec.Selector, metav1validation.LabelSelectorValidationOptions{}, spec.Child("selector"))...)
	if policy := pdb.Spec.UnhealthyPodEvictionPolicy; policy != nil &&
		*policy != policyv1.IfHealthyBudget && *policy != policyv1.AlwaysAllow {
		errs = append(errs, field.NotSupported(spec.Child("unhealthyPodEvictionPolicy"), *policy,
			[]string{string(policyv1.IfHealthyBudget), string(policyv1.AlwaysAllow)}))
	}
	return errs
}

// validateIntOrPercent is apps validation's ValidatePositiveIntOrPercent plus IsNotMoreThan100Percent.
func validateIntOrPercent(value intstr.IntOrString, path *field.Path) field.ErrorList {
	if value.Type == intstr.Int {
		return apivalidation.ValidateNonnegativeField(int64(value.IntValue()), path)
	}
	var errs field.ErrorList
	for _, msg := range validation.IsValidPercent(value.StrVal) {
		errs = append(errs, field.Invalid(path, value, msg))
	}
	if percent, err := strconv.Atoi(strings.TrimSuffix(value.StrVal, "%")); len(errs) == 0 && err == nil && percent > 100 {
		errs = append(errs, field.Invalid(path, value, "must not be greater than 100%"))
	}
	return errs
}

var podDisruptionBudgetStatus = statusAccess{
	spec: func(obj runtime.Object) any { return obj.(*policyv1.PodDisruptionBudget).Spec },
	keepStatus: func(from, to runtime.Object) {
		to.(*policyv1.PodDisruptionBudget).Status = from.(*policyv1.PodDisruptionBudget).Status
	},
	keepSpec: func(from, to runtime.Object) {
		to.(*policyv1.PodDisruptionBudget).Spec = from.(*policyv1.PodDisruptionBudget).Spec
	},
}

// ---- NetworkPolicy: networking/v1 defaults (policyTypes, port protocols) and
// pkg/apis/networking/validation's checks of selectors, ports and peers.

func defaultNetworkPolicy(np, _ *networkingv1.NetworkPolicy) {
	if len(np.Spec.PolicyTypes) == 0 {
		// A policy that names no types is an Ingress policy, and an Egress one if it has egress rules.
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(np.Spec.Egress) > 0 {
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}
	defaultPorts := func(ports []networkingv1.NetworkPolicyPort) {
		for i := range ports {
			if ports[i].Protocol == nil {
				ports[i].Protocol = ptr.To(corev1.ProtocolTCP)
			}
		}
	}
	for i := range np.Spec.Ingress {
		defaultPorts(np.Spec.Ingress[i].Ports)
	}
	for i := range np.Spec.Egress {
		defaultPorts(np.Spec.Egress[i].Ports)
	}
}

func validateNetworkPolicy(np, _ *networkingv1.NetworkPolicy) field.ErrorList {
	spec := field.NewPath("spec")
	options := metav1validation.LabelSelectorValidationOptions{}
	errs := metav1validation.ValidateLabelSelector(&np.Spec.PodSelector, options, spec.Child("podSelector"))
	for i, rule := range np.Spec.Ingress {
		path := spec.Child("ingress").Index(i)
		for j, port := range rule.Ports {
			errs = append(errs, validateNetworkPolicyPort(port, path.Child("ports").Index(j))...)
		}
		for j, peer := range rule.From {
			errs = append(errs, validateNetworkPolicyPeer(peer, path.Child("from").Index(j))...)
		}
	}
	for i, rule := range np.Spec.Egress {
		path := spec.Child("egress").Index(i)
		for j, port := range rule.Ports {
			errs = append(errs, validateNetworkPolicyPort(port, path.Child("ports").Index(j))...)
		}
		for j, peer := range rule.To {
			errs = append(errs, validateNetworkPolicyPeer(peer, path.Child("to").Index(j))...)
		}
	}
	types := []string{string(networkingv1.PolicyTypeIngress), string(networkingv1.PolicyTypeEgress)}
	for i, t := range np.Spec.PolicyTypes {
		if t != networkingv1.PolicyTypeIngress && t != networkingv1.PolicyTypeEgress {
			errs = append(errs, field.NotSupported(spec.Child("policyTypes").Index(i), t, types))
		}
	}
	if len(np.Spec.PolicyTypes) > len(types) {
		errs = append(errs, field.Invalid(spec.Child("policyTypes"), np.Spec.PolicyTypes, "may not specify more than two policyTypes"))
	}
	return errs
}

func validateNetworkPolicyPort(port networkingv1.NetworkPolicyPort, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	protocols := []string{string(corev1.ProtocolTCP), string(corev1.ProtocolUDP), string(corev1.ProtocolSCTP)}
	if p := port.Protocol; p != nil && *p != corev1.ProtocolTCP && *p != corev1.ProtocolUDP && *p != corev1.ProtocolSCTP {
		errs = append(errs, field.NotSupported(path.Child("protocol"), *p, protocols))
	}
	if port.Port == nil {
		if port.EndPort != nil {
			errs = append(errs, field.Forbidden(path.Child("endPort"), "may not be specified when `port` is not specified"))
		}
		return errs
	}
	if port.Port.Type == intstr.Int {
		for _, msg := range validation.IsValidPortNum(int(port.Port.IntVal)) {
			errs = append(errs, field.Invalid(path.Child("port"), port.Port.IntVal, msg))
		}
		if port.EndPort != nil {
			if *port.EndPort < port.Port.IntVal {
				errs = append(errs, field.Invalid(path.Child("endPort"), *port.EndPort, "must be greater than or equal to `port`"))
			}
			for _, msg := range validation.IsValidPortNum(int(*port.EndPort)) {
				errs = append(errs, field.Invalid(path.Child("endPort"), *port.EndPort, msg))
			}
		}
		return errs
	}
	if port.EndPort != nil {
		errs = append(errs, field.Forbidden(path.Child("endPort"), "may not be specified when `port` is non-numeric"))
	}
	for _, msg := range validation.IsValidPortName(port.Port.StrVal) {
		errs = append(errs, field.Invalid(path.Child("port"), port.Port.StrVal, msg))
	}
	return errs
}

func validateNetworkPolicyPeer(peer networkingv1.NetworkPolicyPeer, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	options := metav1validation.LabelSelectorValidationOptions{}
	peers := 0
	if peer.PodSelector != nil || peer.NamespaceSelector != nil {
		peers++
		errs = append(errs, metav1validation.ValidateLabelSelector(peer.PodSelector, options, path.Child("podSelector"))...)
		errs = append(errs, metav1validation.ValidateLabelSelector(peer.NamespaceSelector, options, path.Child("namespaceSelector"))...)
	}
	if peer.IPBlock != nil {
		peers++
		errs = append(errs, validateIPBlock(peer.IPBlock, path.Child("ipBlock"))...)
	}
	switch {
	case peers == 0:
		errs = append(errs, field.Required(path, "must specify a peer"))
	case peers > 1:
		errs = append(errs, field.Forbidden(path, "may not specify more than 1 peer type"))
	}
	return errs
}

func validateIPBlock(block *networkingv1.IPBlock, path *field.Path) field.ErrorList {
	if block.CIDR == "" {
		return field.ErrorList{field.Required(path.Child("cidr"), "")}
	}
	errs := validation.IsValidCIDRForLegacyField(path.Child("cidr"), block.CIDR, true, nil)
	if len(errs) > 0 {
		return errs
	}
	_, cidr, _ := net.ParseCIDR(block.CIDR)
	cidrBits, _ := cidr.Mask.Size()
	for i, except := range block.Except {
		exceptPath := path.Child("except").Index(i)
		if bad := validation.IsValidCIDRForLegacyField(exceptPath, except, true, nil); len(bad) > 0 {
			errs = append(errs, bad...)
			continue
		}
		_, exceptNet, _ := net.ParseCIDR(except)
		exceptBits, _ := exceptNet.Mask.Size()
		if !cidr.Contains(exceptNet.IP) || cidrBits >= exceptBits {
			errs = append(errs, field.Invalid(exceptPath, except, "must be a strict subset of `cidr`"))
		}
	}
	return errs
}

// A NetworkPolicy has a spec and (since 1.28) no status: only metadata.generation is tracked.
func networkPolicySpec(obj runtime.Object) any { return obj.(*networkingv1.NetworkPolicy).Spec }
