# One region's share of the fleet: a security group, and per VM an instance booted from its
# rendered cloud-init plus an Elastic IP (the ipv4 in the fleet file); an instance whose fleet
# entry has ipv6 is created with that address.

terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

variable "fleet_name" { type = string }
variable "render_dir" { type = string }
variable "vms" { type = map(any) }
variable "control_cidrs" { type = list(string) }
variable "edge_cidrs" { type = list(string) }
variable "admin_cidrs" { type = list(string) }
variable "ssh_key_name" { type = string }
variable "instance_type" { type = map(string) }
# The rendered ports.json: the fleet file's ports that other hosts reach.
variable "ports" {
  type = object({
    http         = number
    dns          = number
    nats_cluster = number
    nats_leaf    = number
    control_api  = number
    edge_admin   = number
    dns_admin    = number
  })
}
# The subnet of this region's VMs; null: the default VPC's (AWS picks each private address).
# A VM whose fleet entry has private_ipv4 needs one whose range contains that address; one
# with ipv6, one with an IPv6 range that contains it.
variable "subnet_id" {
  type    = string
  default = null
}

data "aws_subnet" "vm" {
  count = var.subnet_id == null ? 0 : 1
  id    = var.subnet_id
}

data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"] # Debian
  filter {
    name   = "name"
    values = ["debian-13-amd64-*"]
  }
}

resource "aws_security_group" "meridian" {
  count       = length(var.vms) > 0 ? 1 : 0
  name_prefix = "meridian-${var.fleet_name}-"
  description = "Meridian fleet ${var.fleet_name}"
  # The subnet's VPC (null: the default VPC, where instances without subnet_id go).
  vpc_id = one(data.aws_subnet.vm[*].vpc_id)

  # Exactly the ports of the fleet file (ports.json), one rule per port: the NATS client and
  # monitor ports listen on loopback and are not opened at all.
  ingress {
    description      = "HTTP to edges"
    from_port        = var.ports.http
    to_port          = var.ports.http
    protocol         = "tcp"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
  ingress {
    description      = "DNS over UDP"
    from_port        = var.ports.dns
    to_port          = var.ports.dns
    protocol         = "udp"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
  ingress {
    description      = "DNS over TCP"
    from_port        = var.ports.dns
    to_port          = var.ports.dns
    protocol         = "tcp"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
  ingress {
    description = "NATS routes, from the control VMs"
    from_port   = var.ports.nats_cluster
    to_port     = var.ports.nats_cluster
    protocol    = "tcp"
    cidr_blocks = var.control_cidrs
  }
  ingress {
    description = "NATS leaf connections, from the edge VMs"
    from_port   = var.ports.nats_leaf
    to_port     = var.ports.nats_leaf
    protocol    = "tcp"
    cidr_blocks = var.edge_cidrs
  }
  dynamic "ingress" {
    for_each = length(var.admin_cidrs) > 0 ? [22, var.ports.control_api, var.ports.edge_admin, var.ports.dns_admin] : []
    content {
      description = "Operators: SSH, control API, metrics"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      # AWS refuses an IPv6 block in cidr_blocks and an IPv4 one in ipv6_cidr_blocks. The
      # root module admits only canonical blocks, where a ':' means IPv6.
      cidr_blocks      = [for c in var.admin_cidrs : c if !strcontains(c, ":")]
      ipv6_cidr_blocks = [for c in var.admin_cidrs : c if strcontains(c, ":")]
    }
  }
  egress {
    from_port        = 0
    to_port          = 0
    protocol         = "-1"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
}

resource "aws_instance" "vm" {
  for_each               = var.vms
  ami                    = data.aws_ami.debian.id
  instance_type          = var.instance_type[each.value.role]
  key_name               = var.ssh_key_name
  vpc_security_group_ids = [aws_security_group.meridian[0].id]
  # The fleet file's private_ipv4, where the admin listeners bind and the PoP's peers connect:
  # the instance must have it. AWS refuses an address outside the subnet (or one of the
  # subnet's first four and last).
  subnet_id  = var.subnet_id
  private_ip = try(each.value.private_ipv4, null)
  # The fleet file's ipv6, which the routing DNS hands out in AAAA answers (and a control VM's
  # NS glue): the instance must have it. AWS has no Elastic IPv6: the address is the
  # instance's own, from the subnet's IPv6 range (AWS refuses one outside it). Only a new
  # instance is created with it: see ignore_changes and the postcondition below.
  ipv6_addresses = try([each.value.ipv6], null)
  # EC2 user data is limited to 16 KiB; gzip keeps the rendered cloud-init well under it.
  user_data_base64 = base64gzip(file("${var.render_dir}/${each.value.user_data}"))
  # User data only boots a VM. A re-render changes it on VMs that must keep running: every
  # control VM's nats.conf lists every PoP's leaf keys, so adding a node would otherwise
  # replace all control VMs at once (the JetStream cluster, its data and the secrets installed
  # on them). Install changed files on running VMs instead (docs/operations.md), or replace one
  # VM on purpose with `terraform apply -replace=...`.
  #
  # The AWS provider replaces an instance whose ipv6_addresses change (ForceNew): an instance
  # created before the example set them (or whose fleet ipv6 changed since) would be destroyed
  # and created again, a control VM with its JetStream data. Changes to them are ignored, and
  # the postcondition refuses at plan an instance without its fleet ipv6, saying how to assign
  # the address in place.
  lifecycle {
    ignore_changes = [user_data_base64, ipv6_addresses]
    # Checked at plan, before anything is created: AWS refuses an address outside the subnet
    # only when it creates the instance, with the rest of the fleet half applied. An address
    # is in a range when, given the range's prefix length, it has the range's network address.
    precondition {
      condition = try(each.value.private_ipv4, null) == null || try(
        cidrhost("${each.value.private_ipv4}/${split("/", data.aws_subnet.vm[0].cidr_block)[1]}", 0) == cidrhost(data.aws_subnet.vm[0].cidr_block, 0),
        false,
      )
      error_message = "${each.key} has private_ipv4 ${try(each.value.private_ipv4, "")} in the fleet file: set subnet_ids[\"${each.value.region}\"] to a subnet whose range contains it (${var.subnet_id == null ? "none is set" : "${var.subnet_id} is ${try(data.aws_subnet.vm[0].cidr_block, "")}"})."
    }
    precondition {
      condition = try(each.value.ipv6, null) == null || try(
        cidrhost("${each.value.ipv6}/${split("/", data.aws_subnet.vm[0].ipv6_cidr_block)[1]}", 0) == cidrhost(data.aws_subnet.vm[0].ipv6_cidr_block, 0),
        false,
      )
      error_message = "${each.key} has ipv6 ${try(each.value.ipv6, "")} in the fleet file, which DNS announces: set subnet_ids[\"${each.value.region}\"] to a subnet with an IPv6 range that contains it (${var.subnet_id == null ? "none is set" : "${var.subnet_id} has ${coalesce(try(data.aws_subnet.vm[0].ipv6_cidr_block, null), "no IPv6 range")}"})."
    }
    # The instance has its fleet ipv6 (in whatever form AWS writes it): a new one is created
    # with it; an existing one may lack it, its changes being ignored. Checked at plan, from
    # the state as refreshed, and again after apply.
    postcondition {
      condition = try(each.value.ipv6, null) == null || try(contains(
        [for a in self.ipv6_addresses : cidrhost("${a}/128", 0)], cidrhost("${each.value.ipv6}/128", 0),
      ), false)
      error_message = "${each.key} (${self.id}) lacks its fleet file's ipv6 ${try(each.value.ipv6, "")}, which DNS announces (it has ${coalesce(try(join(", ", self.ipv6_addresses), null), "none")}); Terraform does not replace an instance to add it. Assign it in place, then plan again: aws ec2 assign-ipv6-addresses --region ${each.value.region} --network-interface-id ${self.primary_network_interface_id} --ipv6-addresses ${try(each.value.ipv6, "")} (or replace the VM on purpose: terraform apply -replace=..., docs/operations.md)."
    }
  }

  metadata_options {
    http_tokens = "required"
  }
  root_block_device {
    volume_size = each.value.role == "control" ? 40 : 16
    encrypted   = true
  }
  tags = {
    Name   = each.key
    Fleet  = var.fleet_name
    Role   = each.value.role
    Region = each.value.region
  }
}

resource "aws_eip" "vm" {
  for_each = var.vms
  domain   = "vpc"
  tags = {
    Name  = each.key
    Fleet = var.fleet_name
  }
}

resource "aws_eip_association" "vm" {
  for_each      = var.vms
  instance_id   = aws_instance.vm[each.key].id
  allocation_id = aws_eip.vm[each.key].id
}

output "public_ips" {
  value = { for name, eip in aws_eip.vm : name => eip.public_ip }
}

output "public_ipv6" {
  value = { for name, vm in aws_instance.vm : name => try(vm.ipv6_addresses[0], null) }
}
