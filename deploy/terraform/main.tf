# An example that runs a rendered Meridian fleet on AWS EC2 in three regions. Each VM boots
# with its rendered cloud-init (user data). The fleet file's addresses must be the Elastic IPs
# created here: apply once with -target=aws_eip.* to allocate them, put them in fleet.yaml,
# render, then apply again. See docs/operations.md.

provider "aws" {
  alias  = "eu_central_1"
  region = "eu-central-1"
}

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"
}

provider "aws" {
  alias  = "ap_northeast_1"
  region = "ap-northeast-1"
}

locals {
  vms = jsondecode(file("${var.render_dir}/vms.json"))
  # The fleet file's ports that other hosts reach (HTTP, DNS, NATS routes and leaf
  # connections, the control API and the admin ports).
  ports = jsondecode(file("${var.render_dir}/ports.json"))

  # Control VMs may reach the NATS route port, edge VMs the leaf port; nothing else may.
  control_cidrs = [for vm in local.vms : "${vm.ipv4}/32" if vm.role == "control"]
  edge_cidrs    = [for vm in local.vms : "${vm.ipv4}/32" if vm.role == "edge"]

  by_region = {
    for region in distinct([for vm in local.vms : vm.region]) :
    region => { for vm in local.vms : vm.name => vm if vm.region == region }
  }
}

module "eu_central_1" {
  source        = "./region"
  providers     = { aws = aws.eu_central_1 }
  fleet_name    = var.fleet_name
  render_dir    = var.render_dir
  vms           = lookup(local.by_region, "eu-central-1", {})
  subnet_id     = lookup(var.subnet_ids, "eu-central-1", null)
  ports         = local.ports
  control_cidrs = local.control_cidrs
  edge_cidrs    = local.edge_cidrs
  admin_cidrs   = var.admin_cidrs
  ssh_key_name  = var.ssh_key_name
  instance_type = var.instance_type
}

module "us_east_1" {
  source        = "./region"
  providers     = { aws = aws.us_east_1 }
  fleet_name    = var.fleet_name
  render_dir    = var.render_dir
  vms           = lookup(local.by_region, "us-east-1", {})
  subnet_id     = lookup(var.subnet_ids, "us-east-1", null)
  ports         = local.ports
  control_cidrs = local.control_cidrs
  edge_cidrs    = local.edge_cidrs
  admin_cidrs   = var.admin_cidrs
  ssh_key_name  = var.ssh_key_name
  instance_type = var.instance_type
}

module "ap_northeast_1" {
  source        = "./region"
  providers     = { aws = aws.ap_northeast_1 }
  fleet_name    = var.fleet_name
  render_dir    = var.render_dir
  vms           = lookup(local.by_region, "ap-northeast-1", {})
  subnet_id     = lookup(var.subnet_ids, "ap-northeast-1", null)
  ports         = local.ports
  control_cidrs = local.control_cidrs
  edge_cidrs    = local.edge_cidrs
  admin_cidrs   = var.admin_cidrs
  ssh_key_name  = var.ssh_key_name
  instance_type = var.instance_type
}

output "public_ips" {
  description = "VM name -> Elastic IP; these must match the fleet file's ipv4 fields."
  value = merge(
    module.eu_central_1.public_ips,
    module.us_east_1.public_ips,
    module.ap_northeast_1.public_ips,
  )
}

output "public_ipv6" {
  description = "VM name -> its IPv6 address (null: none); these are the fleet file's ipv6 fields, which DNS announces."
  value = merge(
    module.eu_central_1.public_ipv6,
    module.us_east_1.public_ipv6,
    module.ap_northeast_1.public_ipv6,
  )
}
