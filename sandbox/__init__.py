"""A simulated RKE2 platform on loopback: Kubernetes API, Vault replicas and Mattermost.

Real clients (kubectl, kubernetes-asyncio, hvac, mattermostautodriver) talk to it unmodified.
"""
