from agentworld_controller.main import main

main()
