from internlm_chain.cli.app import main

main()
