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

  # Every fleet address may reach the NATS cluster and leaf ports; nothing else may.
  fleet_cidrs = [for vm in local.vms : "${vm.ipv4}/32"]

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
  fleet_cidrs   = local.fleet_cidrs
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
  fleet_cidrs   = local.fleet_cidrs
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
  fleet_cidrs   = local.fleet_cidrs
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
