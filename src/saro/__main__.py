from saro.cli import main

main()
