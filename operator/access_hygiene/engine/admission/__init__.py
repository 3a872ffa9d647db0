"""Admission compilation: the catalogue's single-object rules as CEL (forms.py), the
AccessPolicy guards and the automount mutation (guards.py), over a shared CEL vocabulary (cel.py).
render/admission.py turns them into ValidatingAdmissionPolicies and MutatingAdmissionPolicies."""
