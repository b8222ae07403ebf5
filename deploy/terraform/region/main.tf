# One region's share of the fleet: a security group, and per VM an instance booted from its
# rendered cloud-init plus an Elastic IP (the address in the fleet file).

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
variable "fleet_cidrs" { type = list(string) }
variable "admin_cidrs" { type = list(string) }
variable "ssh_key_name" { type = string }
variable "instance_type" { type = map(string) }

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

  ingress {
    description      = "HTTP to edges"
    from_port        = 80
    to_port          = 80
    protocol         = "tcp"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
  ingress {
    description      = "DNS over UDP"
    from_port        = 53
    to_port          = 53
    protocol         = "udp"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
  ingress {
    description      = "DNS over TCP"
    from_port        = 53
    to_port          = 53
    protocol         = "tcp"
    cidr_blocks      = ["0.0.0.0/0"]
    ipv6_cidr_blocks = ["::/0"]
  }
  ingress {
    description = "NATS routes and leaf nodes, fleet only"
    from_port   = 6222
    to_port     = 7422
    protocol    = "tcp"
    cidr_blocks = var.fleet_cidrs
  }
  dynamic "ingress" {
    for_each = length(var.admin_cidrs) > 0 ? [22, 7070, 9080, 9153] : []
    content {
      description = "Operators: SSH, control API, metrics"
      from_port   = ingress.value
      to_port     = ingress.value
      protocol    = "tcp"
      cidr_blocks = var.admin_cidrs
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
  # EC2 user data is limited to 16 KiB; gzip keeps the rendered cloud-init well under it.
  user_data_base64 = base64gzip(file("${var.render_dir}/${each.value.user_data}"))
  # User data only boots a VM. A re-render changes it on VMs that must keep running: every
  # control VM's nats.conf lists every PoP's leaf keys, so adding a node would otherwise
  # replace all control VMs at once (the JetStream cluster, its data and the secrets installed
  # on them). Install changed files on running VMs instead (docs/operations.md), or replace one
  # VM on purpose with `terraform apply -replace=...`.
  lifecycle {
    ignore_changes = [user_data_base64]
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
