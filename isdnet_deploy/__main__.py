from isdnet_deploy.cli import main

main()
