variable "render_dir" {
  description = "Directory written by `meridian deploy render fleet.yaml --out DIR`."
  type        = string
  default     = "../../rendered"
}

variable "fleet_name" {
  description = "The fleet file's name; tags every resource."
  type        = string
  default     = "example"
}

variable "ssh_key_name" {
  description = "Name of an existing EC2 key pair in every region, for operators (rolling upgrades)."
  type        = string
  default     = null
}

variable "admin_cidrs" {
  description = "CIDR blocks, IPv4 or IPv6, allowed to reach SSH, the control API and the metrics ports."
  type        = list(string)
  default     = []
  # The AWS provider takes a block only in its network form, as Go writes it (198.51.100.0/24,
  # 2001:db8::/48; "did you mean" otherwise): refused here, naming this variable, rather than
  # in each region's security group. The region module tells IPv6 blocks from IPv4 ones by
  # their ':', which this form makes reliable.
  validation {
    condition     = alltrue([for c in var.admin_cidrs : try(cidrsubnet(c, 0, 0) == c, false)])
    error_message = "admin_cidrs must be CIDR blocks in network form, such as 198.51.100.0/24, 198.51.100.7/32 or 2001:db8::/48 (lower case, no host bits set); not ${join(", ", [for c in var.admin_cidrs : jsonencode(c) if !try(cidrsubnet(c, 0, 0) == c, false)])}."
  }
}

variable "instance_type" {
  description = "Instance type per role."
  type        = map(string)
  default = {
    control = "t3.medium"
    edge    = "c6i.large"
  }
}

variable "subnet_ids" {
  description = <<-EOT
    Region -> subnet for its VMs. Required for a region with VMs whose fleet entry has
    private_ipv4: each such instance is created with that address, which must be in the
    subnet's range (not its first four or last address). The subnet's VPC needs an internet
    gateway (the Elastic IPs). Required too for a region with VMs whose fleet entry has ipv6,
    which the routing DNS announces: each such instance is created with that address, which
    must be in the subnet's IPv6 range (the VPC needs an IPv6 block, the subnet's route table
    a ::/0 route to the internet gateway). A region left out uses the default VPC, where AWS
    picks the private addresses: give its VMs no private_ipv4 and no ipv6.
  EOT
  type        = map(string)
  default     = {}
}
